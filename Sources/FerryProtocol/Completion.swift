/// `COMPLETE` (source → destination), end of blackout: the source's image digest (Protocol.md 3.9).
public struct Complete: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.complete

    public var finalRound: UInt32
    /// Must equal `HELLO.page_count`.
    public var pageCount: UInt64
    /// XXH3-64 (seed 0) over the page hash table.
    public var digest: UInt64
    /// XXH3-64 (seed 0) over the `GUEST_CONFIG` payload followed by the `DEVICE_STATE` payload, as
    /// sent: the guest's hardware and registers are verified like its pages.
    public var stateDigest: UInt64

    public init(finalRound: UInt32, pageCount: UInt64, digest: UInt64, stateDigest: UInt64) {
        self.finalRound = finalRound
        self.pageCount = pageCount
        self.digest = digest
        self.stateDigest = stateDigest
    }

    public func validate() throws(ProtocolError) {
        if pageCount == 0 { throw invalid("COMPLETE", "page_count is 0") }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(finalRound)
        out.appendZeros(4)
        out.appendLittleEndian(pageCount)
        out.appendLittleEndian(digest)
        out.appendLittleEndian(stateDigest)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "COMPLETE")
        finalRound = try reader.read(UInt32.self, "final_round")
        try reader.reserved(4)
        pageCount = try reader.read(UInt64.self, "page_count")
        digest = try reader.read(UInt64.self, "digest")
        stateDigest = try reader.read(UInt64.self, "state_digest")
        try reader.finish()
        try validate()
    }
}

/// `VERIFIED` (destination → source): the destination's verdict on the image (Protocol.md 3.10).
public struct Verified: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.verified

    public var ok: Bool
    /// The digest the destination computed over its own page hash table.
    public var digest: UInt64
    /// Pages never received.
    public var pagesMissing: UInt64
    /// Destination time from receiving `COMPLETE` to sending this frame.
    public var verifyMicroseconds: UInt64
    /// Why verification failed; empty when `ok`. Cut to 1024 UTF-8 bytes when encoded.
    public var message: String

    public init(ok: Bool, digest: UInt64, pagesMissing: UInt64, verifyMicroseconds: UInt64, message: String = "") {
        self.ok = ok
        self.digest = digest
        self.pagesMissing = pagesMissing
        self.verifyMicroseconds = verifyMicroseconds
        self.message = message
    }

    public func validate() throws(ProtocolError) {
        if message.utf8.count > StringLimits.message {
            throw ProtocolError(
                .tooLarge, "VERIFIED 'message' is \(message.utf8.count) bytes, the limit is \(StringLimits.message)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        out.append(ok ? 1 : 0)
        out.appendZeros(7)
        out.appendLittleEndian(digest)
        out.appendLittleEndian(pagesMissing)
        out.appendLittleEndian(verifyMicroseconds)
        out.appendStr16(message.truncatedUTF8(to: StringLimits.message))
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "VERIFIED")
        let flag = try reader.read(UInt8.self, "ok")
        if flag > 1 { throw invalid("VERIFIED", "ok is \(flag), must be 0 or 1") }
        ok = flag == 1
        try reader.reserved(7)
        digest = try reader.read(UInt64.self, "digest")
        pagesMissing = try reader.read(UInt64.self, "pages_missing")
        verifyMicroseconds = try reader.read(UInt64.self, "verify_us")
        message = try reader.str16("message", limit: StringLimits.message)
        try reader.finish()
    }
}

/// `COMMIT` (source → destination), empty: the destination owns the guest from here on
/// (Protocol.md 3.11).
public struct Commit: FrameMessage, Equatable {
    public static let frameType = FrameType.commit

    public init() {}

    public func encode(into out: inout [UInt8]) {}

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        try PayloadReader(payload, message: "COMMIT").finish()
    }
}

/// `DONE` (source → destination), empty: the source has read `RESUMED`; the last frame of a
/// migration (Protocol.md 3.24). Until it arrives the destination keeps answering `STATUS`.
public struct Done: FrameMessage, Equatable {
    public static let frameType = FrameType.done

    public init() {}

    public func encode(into out: inout [UInt8]) {}

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        try PayloadReader(payload, message: "DONE").finish()
    }
}

/// `RESUMED` (destination → source): the guest runs on the destination (Protocol.md 3.12).
public struct Resumed: FrameMessage, Equatable {
    public static let frameType = FrameType.resumed

    /// Destination time from receiving `COMMIT` to all vCPUs running.
    public var resumeMicroseconds: UInt64

    public init(resumeMicroseconds: UInt64) {
        self.resumeMicroseconds = resumeMicroseconds
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(resumeMicroseconds)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "RESUMED")
        resumeMicroseconds = try reader.read(UInt64.self, "resume_us")
        try reader.finish()
    }
}
