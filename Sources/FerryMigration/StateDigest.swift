import FerryCodec

/// `COMPLETE.state_digest` (Protocol.md 3.9): XXH3-64 over the `GUEST_CONFIG` payload followed by
/// the `DEVICE_STATE` payload, exactly as sent, so that a damaged register or workload parameter
/// fails verification like a damaged page instead of resuming a subtly different guest.
enum StateDigest {
    static func of(config: [UInt8], deviceState: [UInt8]) -> UInt64 {
        (config + deviceState).withUnsafeBytes { PageHash.hash($0) }
    }
}
