/// `RESUME` (source → destination): the first frame of a new control connection that takes up a
/// migration whose connections were lost during pre-copy (Protocol.md 3.17).
public struct Resume: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.resume

    /// `ACCEPT.session_id` of the migration to take up.
    public var sessionID: UInt64
    /// `ACCEPT.session_token`: proves that this connection comes from the migration's source.
    public var sessionToken: SessionToken
    /// `HELLO.page_count`, checked by the destination.
    public var pageCount: UInt64
    /// The round the source was in when it lost the connection: the destination reports which
    /// pages it holds from that round.
    public var round: UInt32

    public init(sessionID: UInt64, sessionToken: SessionToken, pageCount: UInt64, round: UInt32) {
        self.sessionID = sessionID
        self.sessionToken = sessionToken
        self.pageCount = pageCount
        self.round = round
    }

    public func validate() throws(ProtocolError) {
        if sessionToken.isNone { throw invalid("RESUME", "session_token is all zero") }
        if pageCount == 0 { throw invalid("RESUME", "page_count is 0") }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(sessionID)
        out.appendToken(sessionToken)
        out.appendLittleEndian(pageCount)
        out.appendLittleEndian(round)
        out.appendZeros(4)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "RESUME")
        sessionID = try reader.read(UInt64.self, "session_id")
        sessionToken = try reader.token("session_token")
        pageCount = try reader.read(UInt64.self, "page_count")
        round = try reader.read(UInt32.self, "round")
        try reader.reserved(4)
        try reader.finish()
        try validate()
    }
}
