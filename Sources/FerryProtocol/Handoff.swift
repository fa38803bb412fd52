/// Where a destination stands with one migration (Protocol.md 3.20, section 6): what `STATUS`
/// reports, so that a source whose last acknowledgement was lost, or an operator, can resolve
/// the outcome without guessing.
public enum HandoffState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The destination knows no such migration (never received, or forgotten after a restart):
    /// it does not run that guest and never will.
    case unknown = 0
    /// Pre-copy or blackout: pages are arriving; the guest does not run here.
    case receiving = 1
    /// `VERIFIED` (ok) was sent and no `COMMIT` has arrived: the image is complete and verified,
    /// the guest does not run here, and it runs here only if a `COMMIT` for this session arrives.
    case awaitingCommit = 2
    /// `COMMIT` arrived: the guest runs here (or ran here and was stopped by its operator).
    case resumed = 3
    /// The migration failed or was aborted before `COMMIT`: the partial image is gone and the
    /// guest never runs here.
    case discarded = 4

    public var description: String {
        switch self {
        case .unknown: return "unknown"
        case .receiving: return "receiving"
        case .awaitingCommit: return "awaiting-commit"
        case .resumed: return "resumed"
        case .discarded: return "discarded"
        }
    }
}

/// `STATUS_QUERY` (first frame of a connection, source or operator → destination): asks for the
/// state of one migration (`session_id`), of a guest's migrations (`guest_name`), or of all
/// (both empty) (Protocol.md 3.19).
public struct StatusQuery: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.statusQuery

    /// `ACCEPT.session_id`, or 0 for any.
    public var sessionID: UInt64
    /// `ACCEPT.session_token` of the migration asked about, or `.none`. Needed to resolve; with
    /// it (or over a connection authenticated with the shared key) the answer names session ids
    /// and digests, without it they are 0 (a session id the query names is echoed).
    public var sessionToken: SessionToken
    /// The asker is the source of `sessionID` and will send `COMMIT` or `ABORT` on this
    /// connection if the answer is `awaiting-commit` (flag bit 0). Needs a session ID.
    public var resolve: Bool
    /// A guest name, or empty for any.
    public var guestName: String

    public init(
        sessionID: UInt64 = 0, sessionToken: SessionToken = .none, resolve: Bool = false, guestName: String = ""
    ) {
        self.sessionID = sessionID
        self.sessionToken = sessionToken
        self.resolve = resolve
        self.guestName = guestName
    }

    public func validate() throws(ProtocolError) {
        if resolve && sessionID == 0 { throw invalid("STATUS_QUERY", "the resolve flag needs a session_id") }
        if !guestName.isEmpty, let problem = GuestName.problem(guestName) {
            throw invalid("STATUS_QUERY", "guest_name \(problem)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(sessionID)
        out.appendToken(sessionToken)
        out.appendLittleEndian(UInt32(resolve ? 1 : 0))
        out.appendZeros(4)
        out.appendStr16(guestName)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "STATUS_QUERY")
        sessionID = try reader.read(UInt64.self, "session_id")
        sessionToken = try reader.token("session_token")
        let flags = try reader.read(UInt32.self, "flags")
        if flags > 1 { throw invalid("STATUS_QUERY", "flags \(flags): only bit 0 (resolve) is defined") }
        resolve = flags == 1
        try reader.reserved(4)
        guestName = try reader.str16("guest_name", limit: StringLimits.guestName)
        try reader.finish()
        try validate()
    }
}

/// `STATUS` (destination → asker): one migration's state; a query is answered with `total`
/// frames, `index` 0 … `total` − 1 (Protocol.md 3.20).
public struct Status: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.status
    /// Most `STATUS` frames one query gets (the destination reports its most recent migrations).
    public static let maxTotal: UInt16 = 256

    public var index: UInt16
    public var total: UInt16
    public var state: HandoffState
    public var sessionID: UInt64
    /// The verified image digest (states `awaiting-commit` and `resumed`), else 0.
    public var digest: UInt64
    public var pageCount: UInt64
    /// Seconds since the state last changed.
    public var ageSeconds: UInt32
    public var guestName: String
    /// For people: what the state means for this guest, e.g. the failure that discarded it.
    public var message: String

    public init(
        index: UInt16 = 0, total: UInt16 = 1, state: HandoffState, sessionID: UInt64, digest: UInt64 = 0,
        pageCount: UInt64 = 0, ageSeconds: UInt32 = 0, guestName: String = "", message: String = ""
    ) {
        self.index = index
        self.total = total
        self.state = state
        self.sessionID = sessionID
        self.digest = digest
        self.pageCount = pageCount
        self.ageSeconds = ageSeconds
        self.guestName = guestName
        self.message = message
    }

    public func validate() throws(ProtocolError) {
        if total == 0 || total > Self.maxTotal || index >= total {
            throw invalid("STATUS", "index \(index) of total \(total): needs index < total ≤ \(Self.maxTotal)")
        }
        if !guestName.isEmpty, let problem = GuestName.problem(guestName) {
            throw invalid("STATUS", "guest_name \(problem)")
        }
        if message.utf8.count > StringLimits.message {
            throw ProtocolError(
                .tooLarge, "STATUS 'message' is \(message.utf8.count) bytes, the limit is \(StringLimits.message)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        var message = self
        message.message = self.message.truncatedUTF8(to: StringLimits.message)
        message.requireValid()
        out.appendLittleEndian(index)
        out.appendLittleEndian(total)
        out.append(state.rawValue)
        out.appendZeros(3)
        out.appendLittleEndian(sessionID)
        out.appendLittleEndian(digest)
        out.appendLittleEndian(pageCount)
        out.appendLittleEndian(ageSeconds)
        out.appendZeros(4)
        out.appendStr16(guestName)
        out.appendStr16(message.message)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "STATUS")
        index = try reader.read(UInt16.self, "index")
        total = try reader.read(UInt16.self, "total")
        let raw = try reader.read(UInt8.self, "state")
        guard let known = HandoffState(rawValue: raw) else {
            throw invalid("STATUS", "state \(raw) is not 0…4")
        }
        state = known
        try reader.reserved(3)
        sessionID = try reader.read(UInt64.self, "session_id")
        digest = try reader.read(UInt64.self, "digest")
        pageCount = try reader.read(UInt64.self, "page_count")
        ageSeconds = try reader.read(UInt32.self, "age_s")
        try reader.reserved(4)
        guestName = try reader.str16("guest_name", limit: StringLimits.guestName)
        message = try reader.str16("message", limit: StringLimits.message)
        try reader.finish()
        try validate()
    }
}
