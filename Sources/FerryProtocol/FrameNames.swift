/// Frame and reason names as Protocol.md spells them, for messages people read.
extension FrameType {
    /// The name Protocol.md uses, for messages.
    public var wireName: String {
        switch self {
        case .hello: return "HELLO"
        case .accept: return "ACCEPT"
        case .refuse: return "REFUSE"
        case .guestConfig: return "GUEST_CONFIG"
        case .pageBatch: return "PAGE_BATCH"
        case .roundEnd: return "ROUND_END"
        case .roundAck: return "ROUND_ACK"
        case .deviceState: return "DEVICE_STATE"
        case .complete: return "COMPLETE"
        case .verified: return "VERIFIED"
        case .commit: return "COMMIT"
        case .resumed: return "RESUMED"
        case .abort: return "ABORT"
        case .join: return "JOIN"
        case .streamRoundEnd: return "STREAM_ROUND_END"
        case .resume: return "RESUME"
        case .resumeState: return "RESUME_STATE"
        case .statusQuery: return "STATUS_QUERY"
        case .status: return "STATUS"
        case .authHello: return "AUTH_HELLO"
        case .authChallenge: return "AUTH_CHALLENGE"
        case .authProof: return "AUTH_PROOF"
        case .done: return "DONE"
        case .guestAttachment: return "GUEST_ATTACHMENT"
        case .diskHello: return "DISK_HELLO"
        case .diskAccept: return "DISK_ACCEPT"
        case .diskBlock: return "DISK_BLOCK"
        case .diskEnd: return "DISK_END"
        case .diskVerified: return "DISK_VERIFIED"
        case .diskResume: return "DISK_RESUME"
        case .diskResumeState: return "DISK_RESUME_STATE"
        case .diskJoin: return "DISK_JOIN"
        case .diskStreamEnd: return "DISK_STREAM_END"
        case .diskBaseHashes: return "DISK_BASE_HASHES"
        case .diskDelta: return "DISK_DELTA"
        case .diskStreamsHeld: return "DISK_STREAMS_HELD"
        case .postcopyBegin: return "POSTCOPY_BEGIN"
        case .pageRequest: return "PAGE_REQUEST"
        case .note: return "NOTE"
        }
    }
}

extension AbortReason {
    /// Protocol.md section 3.13's name for an ABORT reason's wire value ("unknown" for values
    /// this version does not define).
    public static func name(wireValue: UInt16) -> String {
        switch wireValue {
        case 1: return "protocol"
        case 2: return "verification"
        case 3: return "io"
        case 4: return "timeout"
        case 5: return "not_converged"
        case 6: return "cancelled"
        case 0xFFFF: return "other"
        default: return "unknown"
        }
    }
}
