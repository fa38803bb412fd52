/// `JOIN` (source → destination): the first frame on each extra page stream (Protocol.md 3.15).
public struct Join: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.join

    /// `ACCEPT.session_id` of the migration this stream belongs to.
    public var sessionID: UInt64
    /// `ACCEPT.session_token`: proves that this stream comes from the migration's source.
    public var sessionToken: SessionToken
    /// 1 … `HELLO.stream_count - 1` (stream 0 is the control connection).
    public var streamIndex: UInt16

    public init(sessionID: UInt64, sessionToken: SessionToken, streamIndex: UInt16) {
        self.sessionID = sessionID
        self.sessionToken = sessionToken
        self.streamIndex = streamIndex
    }

    public func validate() throws(ProtocolError) {
        if sessionToken.isNone { throw invalid("JOIN", "session_token is all zero") }
        if streamIndex < 1 || Int(streamIndex) >= ProtocolLimits.maxStreams {
            throw invalid("JOIN", "stream_index \(streamIndex) is outside 1…\(ProtocolLimits.maxStreams - 1)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(sessionID)
        out.appendToken(sessionToken)
        out.appendLittleEndian(streamIndex)
        out.appendZeros(6)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "JOIN")
        sessionID = try reader.read(UInt64.self, "session_id")
        sessionToken = try reader.token("session_token")
        streamIndex = try reader.read(UInt16.self, "stream_index")
        try reader.reserved(6)
        try reader.finish()
        try validate()
    }
}

/// `STREAM_ROUND_END` (source → destination): this stream has sent all its pages of `round`
/// (Protocol.md 3.16).
public struct StreamRoundEnd: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.streamRoundEnd

    public var round: UInt32
    /// `PAGE_BATCH` frames and pages this stream sent in the round.
    public var batches: UInt64
    public var pages: UInt64

    public init(round: UInt32, batches: UInt64, pages: UInt64) {
        self.round = round
        self.batches = batches
        self.pages = pages
    }

    public func validate() throws(ProtocolError) {}

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(round)
        out.appendZeros(4)
        out.appendLittleEndian(batches)
        out.appendLittleEndian(pages)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "STREAM_ROUND_END")
        round = try reader.read(UInt32.self, "round")
        try reader.reserved(4)
        batches = try reader.read(UInt64.self, "batches")
        pages = try reader.read(UInt64.self, "pages")
        try reader.finish()
    }
}
