import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc

/// Reads and encodes blocks into `DISK_BLOCK` payloads, and sends them: zero blocks as markers,
/// LZ4 where it pays, raw otherwise (`PageEncoder` with the block as its page), each hashed. One
/// per sending thread: it owns its buffers. Counts what it encoded.
final class DiskBlockFramer {
    let blockSize: Int
    private let encoder: PageEncoder
    private let block: UnsafeMutableRawBufferPointer
    private let frame: UnsafeMutableRawPointer
    private(set) var zeroBlocks = 0
    private(set) var lz4Blocks = 0
    private(set) var rawBlocks = 0

    init(blockSize: Int) {
        self.blockSize = blockSize
        encoder = PageEncoder(pageSize: blockSize, mode: .lz4, wordsLimit: 0)
        block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        frame = UnsafeMutableRawPointer.allocate(byteCount: DiskMoveLimits.blockHeaderSize + blockSize, alignment: 64)
    }

    deinit {
        block.deallocate()
        frame.deallocate()
    }

    /// Block `index` of `file` as a `DISK_BLOCK` payload (valid until the next call) and its hash.
    /// `count`: whether it counts in the encodings' figures (not when it is sent again).
    func payload(ofBlock index: Int, in file: PositionedFile, count: Bool = true) throws -> (
        payload: UnsafeRawBufferPointer, hash: UInt64
    ) {
        let read = try file.read(at: index * blockSize, into: block)
        if read < blockSize { memset(block.baseAddress! + read, 0, blockSize - read) }
        let encoded = encoder.encode(page: block.baseAddress!, into: frame + DiskMoveLimits.blockHeaderSize)
        DiskBlockHeader(index: UInt64(index), hash: encoded.hash, encoding: encoded.encoding).encode(to: frame)
        if count {
            switch encoded.encoding {
            case .zero: zeroBlocks += 1
            case .lz4: lz4Blocks += 1
            case .raw, .words: rawBlocks += 1
            }
        }
        return (
            UnsafeRawBufferPointer(start: frame, count: DiskMoveLimits.blockHeaderSize + encoded.length), encoded.hash
        )
    }

    /// Sends one `DISK_BLOCK`. The destination aborts as soon as a block fails to verify: its
    /// `ABORT` is read when it is waiting (checked after each block), or after a send that the
    /// closed connection makes fail, so that the error names the block rather than a reset.
    static func send(_ payload: UnsafeRawBufferPointer, on connection: FramedConnection) throws {
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
    private static func abortWaiting(in connection: FramedConnection, timeoutMs: Int) -> TransportError? {
        try? connection.stream.setReceiveTimeout(ms: timeoutMs)
        do {
            _ = try connection.receive()
        } catch {
            return error.code == .peerAborted ? error : nil
        }
        return nil
    }
}

/// The blocks of one stream of a move with several streams (Protocol.md 10.7): the plan's blocks
/// on this stream's stripe, in order, then `DISK_STREAM_END` (streams 1 … N − 1). Runs on a thread
/// of its own; writes each block's hash into its slot of the shared table.
///
/// `@unchecked Sendable`: used by its thread, then read once that thread has ended; the hash
/// table's slots it writes are its own.
final class DiskStripeSender: @unchecked Sendable {
    let stream: Int
    let connection: FramedConnection
    let framer: DiskBlockFramer
    private let file: PositionedFile
    private let plan: [Int]
    private let positions: [Int]
    private let hashes: UnsafeMutableBufferPointer<UInt64>
    private let cancellation: DiskMoveCancellation?
    /// This stream's share of `--max-bandwidth`, bytes per second.
    private let bytesPerSecond: Double?
    /// Where in `positions` this run starts (the blocks the destination holds after a resume), and
    /// how far it got: the blocks of this stream whose send returned.
    private let startAt: Int
    private(set) var reached: Int

    init(
        stream: Int, streams: Int, connection: FramedConnection, file: PositionedFile, plan: [Int],
        hashes: UnsafeMutableBufferPointer<UInt64>, blockSize: Int, cancellation: DiskMoveCancellation?,
        bytesPerSecond: Double? = nil, startAt: Int = 0
    ) {
        self.bytesPerSecond = bytesPerSecond
        self.startAt = startAt
        reached = startAt
        self.stream = stream
        self.connection = connection
        self.file = file
        self.plan = plan
        self.hashes = hashes
        self.cancellation = cancellation
        framer = DiskBlockFramer(blockSize: blockSize)
        positions = plan.indices.filter { DiskMoveLimits.stream(ofPosition: $0, streams: streams) == stream }
    }

    /// The blocks this stream carries in all.
    var blockCount: Int { positions.count }

    /// Sends the stripe; `sent` is called after each block.
    func run(sent: () -> Void) throws {
        var limiter = bytesPerSecond.map { BandwidthLimiter(bytesPerSecond: $0) }
        for (place, position) in positions.enumerated().dropFirst(startAt) {
            if let cancelled = cancellation?.error(during: "sending") { throw cancelled }
            let (payload, hash) = try framer.payload(ofBlock: plan[position], in: file)
            hashes[position] = hash
            let before = connection.bytesSent
            try DiskBlockFramer.send(payload, on: connection)
            limiter?.consumed(Int(connection.bytesSent &- before))
            reached = place + 1
            sent()
        }
        if stream > 0 { try connection.send(DiskStreamEnd(blocksSent: UInt64(positions.count))) }
    }
}
