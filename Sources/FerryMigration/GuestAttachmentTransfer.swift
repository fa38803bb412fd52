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
        let file = try AttachmentFile(reading: path)
        let hash = StreamingHash()
        var buffer = [UInt8](repeating: 0, count: GuestAttachmentChunk.maxChunk)
        var offset: UInt64 = 0
        while true {
            let count = try file.read(at: offset, into: &buffer)
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
        let file = try AttachmentFile(reading: attachment.path)
        let hash = StreamingHash()
        var buffer = [UInt8](repeating: 0, count: GuestAttachmentChunk.maxChunk)
        var offset: UInt64 = 0
        while offset < attachment.length {
            let want = Int(min(UInt64(buffer.count), attachment.length - offset))
            let count = try file.read(at: offset, into: &buffer, count: want)
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
        let file = try AttachmentFile(creating: path)
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
                try file.write(bytes, at: chunk.offset)
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

/// An attachment's file: `pread` from it or `pwrite` into it.
final class AttachmentFile {
    let path: String
    private let fd: Int32

    init(reading path: String) throws {
        self.path = path
        fd = try valueOrErrno("open(\"\(path)\", O_RDONLY)") { open(path, O_RDONLY | O_CLOEXEC) }
    }

    init(creating path: String) throws {
        self.path = path
        fd = try valueOrErrno("open(\"\(path)\", O_CREAT|O_TRUNC)") {
            open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
    }

    deinit { close(fd) }

    /// Reads up to `count` bytes (default: the buffer's size) at `offset`; fewer only at the end.
    func read(at offset: UInt64, into buffer: inout [UInt8], count: Int? = nil) throws -> Int {
        let want = count ?? buffer.count
        var done = 0
        while done < want {
            let got = try buffer.withUnsafeMutableBytes { bytes in
                try valueOrErrno("pread(\"\(path)\")") {
                    pread(fd, bytes.baseAddress! + done, want - done, off_t(offset) + off_t(done))
                }
            }
            if got == 0 { break }
            done += got
        }
        return done
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            done += try valueOrErrno("pwrite(\"\(path)\")") {
                pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            }
        }
    }
}
