/// `HELLO` (source → destination), the first frame of a connection (Protocol.md 3.1).
public struct Hello: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.hello
    /// ASCII `FERRYMIG`.
    public static let magic: [UInt8] = Array("FERRYMIG".utf8)
    static let magicValue: UInt64 = 0x47494D_59525245_46  // "FERRYMIG" read little-endian

    public var versionMin: UInt16
    public var versionMax: UInt16
    public var pageSize: UInt32
    public var pageCount: UInt64
    public var codecs: CodecSet
    public var cpuStateFormat: UInt16
    public var guestKind: UInt16
    public var vcpuCount: UInt32
    /// TCP connections the source will use for pages (1…16): this one plus `streamCount - 1` that
    /// each open with `JOIN`.
    public var streamCount: UInt16
    /// A label for logs; cut to 255 UTF-8 bytes when encoded.
    public var sourceName: String
    /// The guest's name (≤ 64 bytes of letters, digits, '.', '_', '-'; not starting with '.'),
    /// or empty. A destination that serves several guests stores this one as `<name>.img`.
    public var guestName: String

    public init(
        versionMin: UInt16 = ProtocolLimits.version, versionMax: UInt16 = ProtocolLimits.version,
        pageSize: UInt32, pageCount: UInt64, codecs: CodecSet = .all,
        cpuStateFormat: UInt16 = 1, guestKind: UInt16 = 1,
        vcpuCount: UInt32, streamCount: UInt16 = 1, sourceName: String, guestName: String = ""
    ) {
        self.guestName = guestName
        self.streamCount = streamCount
        self.versionMin = versionMin
        self.versionMax = versionMax
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.codecs = codecs
        self.cpuStateFormat = cpuStateFormat
        self.guestKind = guestKind
        self.vcpuCount = vcpuCount
        self.sourceName = sourceName
    }

    /// Image size in bytes (`page_size × page_count`); valid messages never overflow.
    public var imageSize: UInt64 { UInt64(pageSize) &* pageCount }

    public func validate() throws(ProtocolError) {
        if versionMin == 0 || versionMin > versionMax {
            throw invalid("HELLO", "version range \(versionMin)…\(versionMax) is empty or starts at 0")
        }
        try Hello.validateGeometry(pageSize: pageSize, pageCount: pageCount, message: "HELLO")
        if !codecs.isSuperset(of: .required) {
            throw invalid("HELLO", "codecs \(codecs) lack the required zero and raw codecs")
        }
        if vcpuCount < 1 || vcpuCount > UInt32(ProtocolLimits.maxVCPUs) {
            throw invalid("HELLO", "vcpu_count \(vcpuCount) is outside 1…\(ProtocolLimits.maxVCPUs)")
        }
        if streamCount < 1 || Int(streamCount) > ProtocolLimits.maxStreams {
            throw invalid("HELLO", "stream_count \(streamCount) is outside 1…\(ProtocolLimits.maxStreams)")
        }
        if sourceName.utf8.count > StringLimits.name {
            throw ProtocolError(
                .tooLarge, "HELLO 'source_name' is \(sourceName.utf8.count) bytes, the limit is \(StringLimits.name)")
        }
        if let problem = GuestName.problem(guestName) {
            throw invalid("HELLO", "guest_name \(problem)")
        }
    }

    /// Page size a power of two in 4096…65536, page count ≥ 1, image size < 2^63 (Protocol.md 4).
    public static func validateGeometry(pageSize: UInt32, pageCount: UInt64, message: StaticString)
        throws(ProtocolError)
    {
        let size = Int(pageSize)
        if size < ProtocolLimits.minPageSize || size > ProtocolLimits.maxPageSize || pageSize & (pageSize - 1) != 0 {
            throw invalid(
                message,
                "page_size \(pageSize) is not a power of two in \(ProtocolLimits.minPageSize)…\(ProtocolLimits.maxPageSize)"
            )
        }
        if pageCount == 0 {
            throw invalid(message, "page_count is 0")
        }
        if pageCount > UInt64(Int64.max) / UInt64(pageSize) {
            throw invalid(message, "page_count \(pageCount) × page_size \(pageSize) does not fit below 2^63 bytes")
        }
    }

    public func encode(into out: inout [UInt8]) {
        var message = self
        message.sourceName = sourceName.truncatedUTF8(to: StringLimits.name)
        message.requireValid()
        out.append(contentsOf: Hello.magic)
        out.appendLittleEndian(versionMin)
        out.appendLittleEndian(versionMax)
        out.appendLittleEndian(pageSize)
        out.appendLittleEndian(pageCount)
        out.appendLittleEndian(codecs.rawValue)
        out.appendLittleEndian(cpuStateFormat)
        out.appendLittleEndian(guestKind)
        out.appendLittleEndian(vcpuCount)
        out.appendLittleEndian(streamCount)
        out.appendZeros(2)
        out.appendStr16(message.sourceName)
        out.appendStr16(guestName)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "HELLO")
        if reader.remaining < 8
            || UInt64(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) != Hello.magicValue
        {
            throw ProtocolError(
                .badMagic,
                "the first frame is not a Ferry HELLO (magic 'FERRYMIG' missing): is the peer a Ferry \(ProtocolLimits.version) source?"
            )
        }
        _ = try reader.read(UInt64.self, "magic")
        versionMin = try reader.read(UInt16.self, "version_min")
        versionMax = try reader.read(UInt16.self, "version_max")
        pageSize = try reader.read(UInt32.self, "page_size")
        pageCount = try reader.read(UInt64.self, "page_count")
        codecs = CodecSet(rawValue: try reader.read(UInt32.self, "codecs"))
        cpuStateFormat = try reader.read(UInt16.self, "cpu_state_format")
        guestKind = try reader.read(UInt16.self, "guest_kind")
        vcpuCount = try reader.read(UInt32.self, "vcpu_count")
        streamCount = try reader.read(UInt16.self, "stream_count")
        try reader.reserved(2)
        sourceName = try reader.str16("source_name", limit: StringLimits.name)
        guestName = try reader.str16("guest_name", limit: StringLimits.guestName)
        try reader.finish()
        try validate()
    }
}
