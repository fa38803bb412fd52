import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc
import Logging

/// What `DiskSender` needs to move one disk.
public struct DiskSendOptions: Sendable {
    public var path: String
    public var destination: Endpoint
    public var security: ConnectionSecurity
    public var blockSize: Int
    public var connectTimeoutMs: Int
    /// How long the source waits for `DISK_ACCEPT`, and for `DISK_VERIFIED` after `DISK_END`
    /// (the destination syncs the copy to its disk first).
    public var replyTimeoutMs: Int
    public var sourceName: String

    public init(
        path: String, destination: Endpoint, security: ConnectionSecurity = .none,
        blockSize: Int = DiskMoveLimits.defaultBlockSize, connectTimeoutMs: Int = 10_000,
        replyTimeoutMs: Int = 300_000, sourceName: String = "ferry disk send"
    ) {
        self.path = path
        self.destination = destination
        self.security = security
        self.blockSize = blockSize
        self.connectTimeoutMs = connectTimeoutMs
        self.replyTimeoutMs = replyTimeoutMs
        self.sourceName = sourceName
    }
}

/// The source of a disk move (Protocol.md section 10): maps the file's extents, offers the disk,
/// streams the blocks that hold data and waits for the destination's verdict. One phase per
/// method; `run()` only steps through them.
public final class DiskSender {
    /// The source's states, in order (Protocol.md 10.3).
    public enum Phase: String, Sendable {
        case mapping, connecting, offering, sending, finishing, done
    }

    public let options: DiskSendOptions
    public private(set) var phase = Phase.mapping
    public private(set) var report = DiskMoveReport()
    private let logger: Logger
    private let progress: DiskMoveProgressHandler?
    private var map: DiskExtentMap?
    private var connection: FramedConnection?
    private var file: PositionedFile?
    private let digest: DiskDigest
    private var start: UInt64 = 0

    public init(options: DiskSendOptions, logger: Logger, progress: DiskMoveProgressHandler? = nil) {
        self.options = options
        self.logger = logger
        self.progress = progress
        digest = DiskDigest(blockSize: options.blockSize)
    }

    /// Moves the disk; returns the report once the destination confirmed a verified copy.
    public func run() throws(DiskMoveError) -> DiskMoveReport {
        start = MonotonicClock.now()
        defer { connection?.close() }
        do {
            while phase != .done {
                switch phase {
                case .mapping: try mapDisk()
                case .connecting: try connect()
                case .offering: try offer()
                case .sending: try sendBlocks()
                case .finishing: try finish()
                case .done: break
                }
            }
        } catch {
            throw DiskMoveError.wrap(error, during: phase.rawValue)
        }
        report.seconds = MonotonicClock.seconds(since: start)
        return report
    }

    // MARK: Phases

    private func mapDisk() throws {
        let opened = try PositionedFile(reading: options.path)
        let size = try opened.size()
        guard size > 0 else {
            throw DiskMoveError(.configuration, "\(options.path) is empty: there is no disk to move")
        }
        let mapped = try DiskExtentMap.map(path: options.path, diskSize: size, blockSize: options.blockSize)
        file = opened
        map = mapped
        report.diskSize = size
        report.allocatedBytes = mapped.allocatedBytes
        report.blockSize = options.blockSize
        report.blockCount = mapped.blockCount
        logger.info(
            "mapped the disk",
            metadata: [
                "disk.path": "\(options.path)", "disk.size": "\(size)", "disk.allocated": "\(mapped.allocatedBytes)",
                "disk.extents": "\(mapped.extents.count)", "disk.blocks_to_send": "\(mapped.blocks.count)",
            ])
        phase = .connecting
    }

    private func connect() throws {
        let stream = try TCPStream.connect(options.destination, timeoutMs: options.connectTimeoutMs)
        let framed = FramedConnection(stream)
        connection = framed
        try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
        try framed.authenticate(asClient: options.security)
        report.security = framed.security.description
        report.peer = framed.peerDescription
        phase = .offering
    }

    private func offer() throws {
        guard let connection, let map else { preconditionFailure("offer before connect") }
        let hello = DiskHello(
            blockSize: UInt32(options.blockSize), diskSize: UInt64(map.diskSize),
            allocatedBytes: UInt64(map.allocatedBytes), blocksToSend: UInt64(map.blocks.count),
            sourceName: options.sourceName, diskName: String(options.path.split(separator: "/").last ?? ""))
        try connection.send(hello)
        let reply = try connection.receive()
        switch reply.type {
        case .diskAccept:
            let accept = try DiskAccept(payload: reply.payload)
            logger.info(
                "destination accepted the disk",
                metadata: ["disk.destination": "\(accept.destinationName)", "disk.free_bytes": "\(accept.freeBytes)"])
        case .refuse:
            let refuse = try Refuse(payload: reply.payload)
            throw DiskMoveError(
                .refused, "destination \(connection.peerDescription) refused the disk: \(refuse.message)")
        default:
            throw ProtocolError(.unexpectedFrame, "expected DISK_ACCEPT or REFUSE, got \(reply.type.wireName)")
        }
        phase = .sending
    }

    private func sendBlocks() throws {
        guard let connection, let map, let file else { preconditionFailure("send before offer") }
        let blockSize = options.blockSize
        let encoder = PageEncoder(pageSize: blockSize, mode: .lz4, wordsLimit: 0)
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        let frame = UnsafeMutableRawPointer.allocate(
            byteCount: DiskMoveLimits.blockHeaderSize + blockSize, alignment: 64)
        defer {
            block.deallocate()
            frame.deallocate()
        }
        for (done, index) in map.blocks.enumerated() {
            let read = try file.read(at: index * blockSize, into: block)
            if read < blockSize { memset(block.baseAddress! + read, 0, blockSize - read) }
            let encoded = encoder.encode(page: block.baseAddress!, into: frame + DiskMoveLimits.blockHeaderSize)
            DiskBlockHeader(index: UInt64(index), hash: encoded.hash, encoding: encoded.encoding).encode(to: frame)
            digest.add(block: index, hash: encoded.hash)
            count(encoded.encoding)
            try send(UnsafeRawBufferPointer(start: frame, count: DiskMoveLimits.blockHeaderSize + encoded.length))
            report.blocksSent += 1
            progress?(
                DiskMoveProgress(
                    blocksDone: done + 1, blocksTotal: map.blocks.count, wireBytes: connection.bytesSent,
                    elapsedSeconds: MonotonicClock.seconds(since: start)))
        }
        phase = .finishing
    }

    private func finish() throws {
        guard let connection, let map else { preconditionFailure("finish before send") }
        report.digest = digest.finish(blockCount: map.blockCount)
        try connection.send(DiskEnd(blocksSent: UInt64(report.blocksSent), digest: report.digest))
        let reply = try connection.receive()
        guard reply.type == .diskVerified else {
            throw ProtocolError(.unexpectedFrame, "expected DISK_VERIFIED, got \(reply.type.wireName)")
        }
        let verified = try DiskVerified(payload: reply.payload)
        guard verified.digest == report.digest else {
            throw DiskMoveError(
                .verification,
                "the destination confirmed digest 0x\(hex(verified.digest)), this source computed 0x\(hex(report.digest)): retry the move"
            )
        }
        report.bytesWritten = verified.bytesWritten
        report.wireBytesSent = connection.bytesSent
        report.wireBytesReceived = connection.bytesReceived
        logger.info("the destination verified the disk", metadata: ["disk.digest": "0x\(hex(report.digest))"])
        phase = .done
    }

    // MARK: Pieces

    /// Sends one `DISK_BLOCK`. The destination aborts as soon as a block fails to verify: its
    /// `ABORT` is read when it is waiting (checked after each block), or after a send that the
    /// closed connection makes fail, so that the error names the block rather than a reset.
    private func send(_ payload: UnsafeRawBufferPointer) throws {
        guard let connection else { return }
        do {
            try connection.send(.diskBlock, payload: payload)
        } catch {
            throw abortWaiting(in: connection, timeoutMs: 2000) ?? error
        }
        if connection.stream.unreadBytes > 0 {
            _ = try connection.receive()  // an ABORT throws; anything else here is out of order
            throw ProtocolError(.unexpectedFrame, "the destination sent a frame while blocks were due")
        }
    }

    /// The destination's `ABORT`, if one arrives within `timeoutMs`.
    private func abortWaiting(in connection: FramedConnection, timeoutMs: Int) -> TransportError? {
        try? connection.stream.setReceiveTimeout(ms: timeoutMs)
        do {
            _ = try connection.receive()
        } catch {
            return error.code == .peerAborted ? error : nil
        }
        return nil
    }

    private func count(_ encoding: PageEncoding) {
        switch encoding {
        case .zero: report.zeroBlocks += 1
        case .lz4: report.lz4Blocks += 1
        case .raw, .words: report.rawBlocks += 1
        }
    }
}

func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}
