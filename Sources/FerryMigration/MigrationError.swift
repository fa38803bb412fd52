/// Where the guest is after a failed migration: the one fact an operator needs first.
public enum GuestLocation: String, Sendable, Codable {
    /// The guest keeps running on the source, untouched.
    case source
    /// The destination owns and runs the guest.
    case destination
    /// The source handed the guest over (COMMIT was written) but the destination's resume was not confirmed.
    case handedOverUnconfirmed = "handed-over-unconfirmed"
    /// This side never had the guest (a destination that did not receive COMMIT).
    case notHere = "not-here"
    /// The guest runs nowhere and cannot be saved: post-copy failed after `COMMIT` (Protocol.md
    /// 11.4), with pages the destination's guest needs only on the source, whose paused copy
    /// must not resume either (the guest may have run on at the destination).
    case lost
}

/// Why a migration did not complete.
public struct MigrationError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The destination refused the guest (capacity, page size, version, existing image).
        case refused
        /// Pre-copy did not meet the downtime target within --max-rounds/--timeout.
        case notConverged
        /// The connection failed or the peer vanished.
        case transport
        /// The peer sent bytes that violate Protocol.md.
        case protocolViolation
        /// A page or the image digest did not verify.
        case verification
        /// The peer aborted the migration.
        case peerAborted
        /// A local system call failed (image file, memory, tracker).
        case system
        /// Invalid settings or guest configuration.
        case configuration
        /// An operator cancelled the migration on this side (`MigrationCancellation`: a
        /// signal, an API call) before the guest was handed over.
        case cancelled
    }

    public var code: Code
    public var message: String
    public var guest: GuestLocation

    public init(_ code: Code, _ message: String, guest: GuestLocation) {
        self.code = code
        self.message = message
        self.guest = guest
    }

    public var description: String {
        let outcome: String
        switch guest {
        case .source: outcome = "the guest keeps running on the source"
        case .destination: outcome = "the guest runs on the destination"
        case .handedOverUnconfirmed:
            outcome = "the guest was handed over; its resume on the destination was not confirmed"
        case .notHere: outcome = "no guest runs here; the partial image was removed"
        case .lost: outcome = "neither host runs the guest"
        }
        return "\(message) (\(outcome))"
    }
}
