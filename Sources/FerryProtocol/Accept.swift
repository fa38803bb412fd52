/// `ACCEPT` (destination → source): the destination takes the guest (Protocol.md 3.2).
public struct Accept: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.accept

    /// The chosen version: the highest one both sides speak.
    public var version: UInt16
    /// Codecs the destination decodes.
    public var codecs: CodecSet
    /// Bytes the destination can give the guest (informational).
    public var memoryAvailable: UInt64
    /// Free bytes where the image goes (informational).
    public var diskAvailable: UInt64
    /// Names this migration; each extra stream presents it in `JOIN`.
    public var sessionID: UInt64
    /// The secret that binds this migration to its source (never zero): the source presents it
    /// in `JOIN`, `RESUME` and a resolving `STATUS_QUERY`; nobody else learns it from the destination.
    public var sessionToken: SessionToken
    /// A label for logs; cut to 255 UTF-8 bytes when encoded.
    public var destinationName: String

    public init(
        version: UInt16 = ProtocolLimits.version, codecs: CodecSet = .all,
        memoryAvailable: UInt64, diskAvailable: UInt64, sessionID: UInt64 = 0, sessionToken: SessionToken,
        destinationName: String
    ) {
        self.sessionID = sessionID
        self.sessionToken = sessionToken
        self.version = version
        self.codecs = codecs
        self.memoryAvailable = memoryAvailable
        self.diskAvailable = diskAvailable
        self.destinationName = destinationName
    }

    public func validate() throws(ProtocolError) {
        if version == 0 { throw invalid("ACCEPT", "version is 0") }
        if !codecs.isSuperset(of: .required) {
            throw invalid("ACCEPT", "codecs \(codecs) lack the required zero and raw codecs")
        }
        if sessionToken.isNone { throw invalid("ACCEPT", "session_token is all zero") }
        if destinationName.utf8.count > StringLimits.name {
            throw ProtocolError(
                .tooLarge,
                "ACCEPT 'destination_name' is \(destinationName.utf8.count) bytes, the limit is \(StringLimits.name)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        var message = self
        message.destinationName = destinationName.truncatedUTF8(to: StringLimits.name)
        message.requireValid()
        out.appendLittleEndian(version)
        out.appendZeros(2)
        out.appendLittleEndian(codecs.rawValue)
        out.appendLittleEndian(memoryAvailable)
        out.appendLittleEndian(diskAvailable)
        out.appendLittleEndian(sessionID)
        out.appendToken(sessionToken)
        out.appendStr16(message.destinationName)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "ACCEPT")
        version = try reader.read(UInt16.self, "version")
        try reader.reserved(2)
        codecs = CodecSet(rawValue: try reader.read(UInt32.self, "codecs"))
        memoryAvailable = try reader.read(UInt64.self, "memory_available")
        diskAvailable = try reader.read(UInt64.self, "disk_available")
        sessionID = try reader.read(UInt64.self, "session_id")
        sessionToken = try reader.token("session_token")
        destinationName = try reader.str16("destination_name", limit: StringLimits.name)
        try reader.finish()
        try validate()
    }
}
