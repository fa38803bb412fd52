/// Frame types of protocol version 1 (Protocol.md section 3). Bit 15 marks an optional type.
public enum FrameType: UInt16, Sendable, CaseIterable {
    case hello = 1
    case accept = 2
    case refuse = 3
    case guestConfig = 4
    case pageBatch = 5
    case roundEnd = 6
    case roundAck = 7
    case deviceState = 8
    case complete = 9
    case verified = 10
    case commit = 11
    case resumed = 12
    case abort = 13
    case join = 14
    case streamRoundEnd = 15
    case resume = 16
    case resumeState = 17
    case statusQuery = 18
    case status = 19
    case authHello = 20
    case authChallenge = 21
    case authProof = 22
    case done = 23
    case guestAttachment = 24
    /// The disk move (Protocol.md section 10).
    case diskHello = 25
    case diskAccept = 26
    case diskBlock = 27
    case diskEnd = 28
    case diskVerified = 29
    case diskResume = 30
    case diskResumeState = 31
    case diskJoin = 32
    case diskStreamEnd = 33
    /// Disk-move version 2: a move onto an older copy (Protocol.md 10.8).
    case diskBaseHashes = 34
    case diskDelta = 35
    case diskStreamsHeld = 36
    /// Post-copy (Protocol.md section 11).
    case postcopyBegin = 37
    case pageRequest = 38
    case note = 0x8001

    public static let optionalBit: UInt16 = 0x8000

    public var isOptional: Bool { rawValue & Self.optionalBit != 0 }

    /// Largest payload this type may carry (Protocol.md section 3).
    public var maxPayload: Int {
        switch self {
        case .pageBatch, .resumeState, .deviceState, .postcopyBegin: return ProtocolLimits.maxFramePayload
        case .guestConfig: return 64 * 1024
        case .guestAttachment: return GuestAttachmentChunk.maxChunk + 8
        case .diskBlock: return DiskMoveLimits.maxBlockSize + DiskMoveLimits.blockHeaderSize
        case .diskBaseHashes: return 16 + 8 * DiskMoveLimits.maxHashesPerFrame
        default: return 4096
        }
    }
}

public enum ProtocolLimits {
    public static let maxFramePayload = 16 * 1024 * 1024 + 64 * 1024
    public static let maxEntriesPerBatch = 4096
    public static let minPageSize = 4096
    public static let maxPageSize = 65536
    public static let maxVCPUs = 64
    public static let maxStreams = 16
    public static let version: UInt16 = 6
    /// Memory regions per guest (`GUEST_CONFIG.region_count`).
    public static let maxMemoryRegions = 64
    /// Sections per `DEVICE_STATE`.
    public static let maxDeviceSections = 4096
}

/// The fixed 16-byte frame header (Protocol.md section 2), little-endian.
public struct FrameHeader: Equatable, Sendable {
    public static let size = 16

    public var type: UInt16
    public var flags: UInt16
    public var length: UInt32
    public var sequence: UInt64

    public init(type: UInt16, flags: UInt16 = 0, length: UInt32, sequence: UInt64) {
        self.type = type
        self.flags = flags
        self.length = length
        self.sequence = sequence
    }

    public init(_ type: FrameType, length: Int, sequence: UInt64) {
        self.init(type: type.rawValue, flags: 0, length: UInt32(length), sequence: sequence)
    }

    /// The known type, or nil for an unknown optional type (which the caller skips).
    public var frameType: FrameType? { FrameType(rawValue: type) }

    public var isOptional: Bool { type & FrameType.optionalBit != 0 }

    /// Writes the 16 header bytes at `destination`.
    public func encode(to destination: UnsafeMutableRawPointer) {
        destination.storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt16.self)
        destination.storeBytes(of: flags.littleEndian, toByteOffset: 2, as: UInt16.self)
        destination.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        destination.storeBytes(of: sequence.littleEndian, toByteOffset: 8, as: UInt64.self)
    }

    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.size) { buffer, count in
            encode(to: UnsafeMutableRawPointer(buffer.baseAddress!))
            count = Self.size
        }
    }

    /// Decodes and validates a header: type not 0, mandatory types known, flags zero,
    /// length within the type's maximum. `bytes` must hold at least 16 bytes.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> FrameHeader {
        guard bytes.count >= size else {
            throw ProtocolError(.truncated, "frame header needs \(size) bytes, got \(bytes.count)")
        }
        let header = FrameHeader(unvalidated: bytes)
        try header.validate()
        return header
    }

    /// Reads the 16 header bytes at the start of `bytes` (which must hold them) without checking them.
    public init(unvalidated bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= Self.size, "frame header needs \(Self.size) bytes, got \(bytes.count)")
        self.init(
            type: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt16.self)),
            flags: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2, as: UInt16.self)),
            length: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
            sequence: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }

    public func validate() throws(ProtocolError) {
        if let error = validationError() { throw error }
    }

    /// What `validate()` would throw, without throwing.
    public func validationError() -> ProtocolError? {
        if type & ~FrameType.optionalBit == 0 {
            return ProtocolError(.unknownFrameType, "frame type 0 is invalid")
        }
        let limit: Int
        if let known = frameType {
            limit = known.maxPayload
        } else if isOptional {
            limit = ProtocolLimits.maxFramePayload
        } else {
            return ProtocolError(.unknownFrameType, "unknown mandatory frame type \(type)")
        }
        if flags != 0 && !isOptional {
            return ProtocolError(.invalidField, "frame type \(type) has unknown flags 0x\(String(flags, radix: 16))")
        }
        if Int(length) > limit {
            return ProtocolError(
                .tooLarge, "frame type \(type) payload of \(length) bytes exceeds its maximum of \(limit)")
        }
        return nil
    }
}

/// A message that travels as one frame's payload.
public protocol FrameMessage: Sendable {
    static var frameType: FrameType { get }
    /// Appends this message's payload bytes (not the header) to `out`.
    func encode(into out: inout [UInt8])
    /// Decodes a payload, treating it as hostile: every length is checked before use.
    init(payload: UnsafeRawBufferPointer) throws(ProtocolError)
}

extension FrameMessage {
    public func encodedPayload() -> [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }
}
