import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc

/// A guest kind's opaque attachment (Protocol.md 3.25), as a file: on the source, the file the
/// guest kind names; on the destination, the file it was received into (verified). It travels in
/// `GUEST_ATTACHMENT` chunks of at most 1 MiB, so neither side holds it in memory, whatever its
/// length. Any guest kind may have one; Ferry's built-in guest uses it for its trace file.
public struct GuestAttachment: Sendable, Equatable {
    public var path: String
    public var length: UInt64
    /// XXH3-64 (seed 0) of the whole file.
    public var hash: UInt64

    public init(path: String, length: UInt64, hash: UInt64) {
        self.path = path
        self.length = length
        self.hash = hash
    }

    /// Reads `path` once, 1 MiB at a time, for its length and hash.
    public static func measure(path: String) throws -> GuestAttachment {
        let file = try PositionedFile(reading: path)
        let hash = StreamingHash()
        var buffer = [UInt8](repeating: 0, count: GuestAttachmentChunk.maxChunk)
        var offset: UInt64 = 0
        while true {
            let count = try buffer.withUnsafeMutableBytes { try file.read(at: Int(offset), into: $0) }
            if count == 0 { break }
            buffer.withUnsafeBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            offset += UInt64(count)
        }
        return GuestAttachment(path: path, length: offset, hash: hash.value)
    }
}

/// Sends and receives an attachment's chunks on the control connection, right after
/// `GUEST_CONFIG` (Protocol.md 3.25).
enum AttachmentTransfer {
    /// Source: the file's chunks in order. The file is hashed again as it is read; one that no
    /// longer matches what `GUEST_CONFIG` announced fails before its last chunk is sent.
    static func send(_ attachment: GuestAttachment, over connection: FramedConnection) throws {
        let file = try PositionedFile(reading: attachment.path)
        let hash = StreamingHash()
        var buffer = [UInt8](repeating: 0, count: GuestAttachmentChunk.maxChunk)
        var offset: UInt64 = 0
        while offset < attachment.length {
            let want = Int(min(UInt64(buffer.count), attachment.length - offset))
            let count = try buffer.withUnsafeMutableBytes {
                try file.read(at: Int(offset), into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want]))
            }
            let chunk = Array(buffer[0..<count])
            chunk.withUnsafeBytes { hash.update($0) }
            let end = offset + UInt64(count)
            if count < want || (end == attachment.length && hash.value != attachment.hash) {
                throw MigrationError(
                    .configuration,
                    "the guest's attachment \(attachment.path) changed while it was being sent (its length or contents differ from when the migration started); leave it alone during a migration and retry",
                    guest: .source)
            }
            try connection.send(GuestAttachmentChunk(offset: offset, bytes: chunk))
            offset = end
        }
    }

    /// Destination: writes the chunks (the first one already read, `first`) to `path`, then
    /// checks the length and hash `GUEST_CONFIG` announced.
    static func receive(
        length: UInt64, hash expected: UInt64, first: ReceivedFrame, from connection: FramedConnection,
        into path: String
    ) throws {
        let file = try PositionedFile(creating: path)
        let hash = StreamingHash()
        var received: UInt64 = 0
        var frame = first
        while true {
            guard frame.type == .guestAttachment else {
                throw MigrationError(
                    .protocolViolation,
                    "expected GUEST_ATTACHMENT (\(received) of \(length) bytes received), got \(frame.type.wireName)",
                    guest: .notHere)
            }
            let chunk = try GuestAttachmentChunk(payload: frame.payload)
            try GuestAttachmentChunk.checkNext(
                offset: chunk.offset, count: chunk.bytes.count, received: received, length: length)
            try chunk.bytes.withUnsafeBytes { bytes in
                hash.update(bytes)
                try file.write(bytes, at: Int(chunk.offset))
            }
            received += UInt64(chunk.bytes.count)
            if received == length { break }
            frame = try connection.receive()
        }
        guard hash.value == expected else {
            throw MigrationError(
                .verification,
                "GUEST_ATTACHMENT: the \(length) bytes received hash to \(hex(hash.value)), GUEST_CONFIG announced \(hex(expected)): the attachment was damaged in transit; retry the migration",
                guest: .notHere)
        }
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
    }
}
