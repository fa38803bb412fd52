import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc
import Logging
import Synchronization

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
    /// Connections the source opens again, one after the other, to resume after a loss
    /// (`DISK_RESUME`); 0: a lost connection ends the move.
    public var reconnectAttempts: Int = 5
    /// Connections that carry blocks (1 … 16, Protocol.md 10.7). With more than one, a lost
    /// connection on any pauses the move and every stream resumes (version 2).
    public var streams: Int = 1
    /// Most the block streams together may put on the wire, bytes per second (nil: no limit).
    public var maxBandwidthBytesPerSecond: Double?
    /// The highest disk-move version offered (`DISK_HELLO.version_max`): 1 behaves as a version-1
    /// source (no move onto an older copy, several streams do not resume).
    public var highestVersion: UInt16 = DiskMoveLimits.version
    public var cancellation: DiskMoveCancellation?

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
        case mapping, connecting, offering, sending, resuming, finishing, done
    }

    public let options: DiskSendOptions
    public private(set) var phase = Phase.mapping
    public private(set) var report = DiskMoveReport()
    private let logger: Logger
    private let progress: DiskMoveProgressHandler?
    private var map: DiskExtentMap?
    /// The blocks to send, in order: the map's blocks, or on the destination's older copy the
    /// blocks that differ from it (Protocol.md 10.8).
    private var plan: [Int] = []
    /// Every block's hash of this disk, when the destination has an older copy (the digest's table).
    private var diskTable: [UInt64]?
    private var connection: FramedConnection?
    private var file: PositionedFile?
    private var start: UInt64 = 0
    /// Each planned block's hash, by its place in `plan` (the digest is built at the end,
    /// so that blocks sent again after a resume count once).
    private var hashes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: 0)
    /// The place in `plan` of the next block to send, and how far the sending ever got.
    private var nextPosition = 0
    private var sentPositions = 0
    private var accept: DiskAccept?
    /// Attempts made to resume since the last block went out, and wire bytes of lost connections.
    private var failedAttempts = 0
    private var earlierWireBytes: UInt64 = 0
    /// Streams 1 … N − 1 (several streams), opened after `DISK_ACCEPT`.
    private var extraConnections: [FramedConnection] = []
    /// Several streams: per stream, the blocks of its share the destination holds (where the next
    /// run starts) and the blocks whose send returned (where the last run got to).
    private var streamHeld: [Int] = []
    private var streamReached: [Int] = []

    public init(options: DiskSendOptions, logger: Logger, progress: DiskMoveProgressHandler? = nil) {
        self.options = options
        self.logger = logger
        self.progress = progress
    }

    deinit { hashes.deallocate() }

    /// Moves the disk; returns the report once the destination confirmed a verified copy.
    public func run() throws(DiskMoveError) -> DiskMoveReport {
        start = MonotonicClock.now()
        defer {
            connection?.close()
            for extra in extraConnections { extra.close() }
        }
        do {
            while phase != .done {
                if let cancelled = options.cancellation?.error(during: phase.rawValue) { throw cancelled }
                switch phase {
                case .mapping: try mapDisk()
                case .connecting: try connect()
                case .offering: try offer()
                case .sending: try sendBlocks()
                case .resuming: try resume()
                case .finishing: try finish()
                case .done: break
                }
            }
        } catch {
            if let cancelled = options.cancellation?.error(during: phase.rawValue) {
                try? connection?.send(
                    Abort(reason: .cancelled, message: "\(cancelled.message) on the source: the move is abandoned"))
                throw cancelled
            }
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
        setPlan(mapped.blocks)
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

    private func setPlan(_ blocks: [Int]) {
        plan = blocks
        hashes.deallocate()
        hashes = .allocate(capacity: blocks.count)
        hashes.initialize(repeating: 0)
    }

    private func connect() throws {
        try openConnection()
        phase = .offering
    }

    private func openConnection() throws {
        let stream = try TCPStream.connect(options.destination, timeoutMs: options.connectTimeoutMs)
        let framed = FramedConnection(stream)
        connection = framed
        options.cancellation?.watch(stream)
        try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
        try framed.authenticate(asClient: options.security)
        report.security = framed.security.description
        report.peer = framed.peerDescription
    }

    private func offer() throws {
        guard let connection, let map else { preconditionFailure("offer before connect") }
        let hello = DiskHello(
            versionMax: options.highestVersion, blockSize: UInt32(options.blockSize), diskSize: UInt64(map.diskSize),
            allocatedBytes: UInt64(map.allocatedBytes), blocksToSend: UInt64(map.blocks.count),
            streamCount: UInt16(options.streams),
            sourceName: options.sourceName, diskName: String(options.path.split(separator: "/").last ?? ""))
        try connection.send(hello)
        let reply = try connection.receive()
        switch reply.type {
        case .diskAccept:
            let accept = try DiskAccept(payload: reply.payload)
            guard (DiskMoveLimits.minVersion...options.highestVersion).contains(accept.version) else {
                throw ProtocolError(.invalidField, "DISK_ACCEPT chose version \(accept.version), not offered")
            }
            self.accept = accept
            logger.info(
                "destination accepted the disk",
                metadata: [
                    "disk.destination": "\(accept.destinationName)", "disk.free_bytes": "\(accept.freeBytes)",
                    "disk.version": "\(accept.version)", "disk.base": "\(accept.flags & DiskAccept.baseFlag != 0)",
                ])
            if accept.flags & DiskAccept.baseFlag != 0 { try sendOntoBase(map, on: connection) }
        case .refuse:
            let refuse = try Refuse(payload: reply.payload)
            throw DiskMoveError(
                .refused, "destination \(connection.peerDescription) refused the disk: \(refuse.message)")
        default:
            throw ProtocolError(.unexpectedFrame, "expected DISK_ACCEPT or REFUSE, got \(reply.type.wireName)")
        }
        if let accept, options.streams > 1 { try openStreams(accept) }
        phase = .sending
    }

    /// Streams 1 … N − 1: each connects, authenticates and sends `DISK_JOIN`.
    private func openStreams(_ accept: DiskAccept) throws {
        for index in 1..<options.streams {
            let stream = try TCPStream.connect(options.destination, timeoutMs: options.connectTimeoutMs)
            let framed = FramedConnection(stream)
            extraConnections.append(framed)
            try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
            try framed.authenticate(asClient: options.security)
            try framed.send(DiskJoin(moveID: accept.moveID, moveToken: accept.moveToken, streamIndex: UInt16(index)))
        }
    }

    /// The destination holds an older copy (Protocol.md 10.8): reads its block hashes, hashes
    /// this disk on the same grid, keeps the blocks that differ and says how many (`DISK_DELTA`).
    private func sendOntoBase(_ map: DiskExtentMap, on connection: FramedConnection) throws {
        let before = connection.bytesReceived
        var base: [UInt64] = []
        base.reserveCapacity(map.blockCount)
        while base.count < map.blockCount {
            let frame = try connection.receive()
            guard frame.type == .diskBaseHashes else {
                throw ProtocolError(.unexpectedFrame, "expected DISK_BASE_HASHES, got \(frame.type.wireName)")
            }
            let part = try DiskBaseHashes(payload: frame.payload)
            guard part.firstBlock == UInt64(base.count), base.count + part.hashes.count <= map.blockCount else {
                throw ProtocolError(
                    .invalidField,
                    "DISK_BASE_HASHES covers blocks from \(part.firstBlock) (\(part.hashes.count)); \(base.count) of \(map.blockCount) were due next"
                )
            }
            base += part.hashes
        }
        report.baseHashBytes = connection.bytesReceived - before
        let started = MonotonicClock.now()
        let table = try DiskBase.blockHashes(path: options.path, diskSize: map.diskSize, blockSize: options.blockSize)
        report.baseSeconds = MonotonicClock.seconds(since: started)
        diskTable = table
        setPlan(DiskBase.delta(source: table, base: base))
        report.blocksUnchanged = map.blockCount - plan.count
        try connection.send(
            DiskDelta(blocksToSend: UInt64(plan.count), blocksUnchanged: UInt64(report.blocksUnchanged)))
        logger.info(
            "the destination holds an older copy: sending the blocks that differ",
            metadata: [
                "disk.blocks_to_send": "\(plan.count)", "disk.blocks_unchanged": "\(report.blocksUnchanged)",
                "disk.hash_seconds": "\(report.baseSeconds)",
            ])
    }

    private func sendBlocks() throws {
        guard let connection, map != nil, let file else { preconditionFailure("send before offer") }
        if options.streams > 1 {
            try sendStriped(connection, file: file)
            return
        }
        let framer = DiskBlockFramer(blockSize: options.blockSize)
        defer { addCounts(of: framer) }
        var limiter = options.maxBandwidthBytesPerSecond.map { BandwidthLimiter(bytesPerSecond: $0) }
        while nextPosition < plan.count {
            if let cancelled = options.cancellation?.error(during: phase.rawValue) { throw cancelled }
            let index = plan[nextPosition]
            let (payload, hash) = try framer.payload(ofBlock: index, in: file, count: nextPosition >= sentPositions)
            hashes[nextPosition] = hash
            let before = connection.bytesSent
            do {
                try DiskBlockFramer.send(payload, on: connection)
                limiter?.consumed(Int(connection.bytesSent &- before))
            } catch let error as TransportError where Self.isLost(error) && options.reconnectAttempts > 0 {
                logger.warning(
                    "lost the connection while sending; resuming",
                    metadata: ["disk.block": "\(index)", "disk.error": "\(error)"])
                phase = .resuming
                return
            }
            nextPosition += 1
            sentPositions = max(sentPositions, nextPosition)
            failedAttempts = 0
            progress?(
                DiskMoveProgress(
                    blocksDone: nextPosition, blocksTotal: plan.count,
                    wireBytes: earlierWireBytes + connection.bytesSent,
                    elapsedSeconds: MonotonicClock.seconds(since: start)))
        }
        report.blocksSent = plan.count
        phase = .finishing
    }

    /// Several streams: one thread per extra stream, stream 0 on this one, each sending its
    /// stripe from the blocks the destination holds; the first failure ends the run (the other
    /// streams are closed and waited for). A lost connection in version 2 resumes (10.7).
    private func sendStriped(_ connection: FramedConnection, file: PositionedFile) throws {
        let connections = [connection] + extraConnections
        if streamHeld.count != connections.count { streamHeld = Array(repeating: 0, count: connections.count) }
        let senders = connections.enumerated().map { stream, framed in
            DiskStripeSender(
                stream: stream, streams: connections.count, connection: framed, file: file, plan: plan,
                hashes: hashes, blockSize: options.blockSize, cancellation: options.cancellation,
                bytesPerSecond: options.maxBandwidthBytesPerSecond.map { $0 / Double(connections.count) },
                startAt: streamHeld[stream])
        }
        let done = Atomic<Int>(streamHeld.reduce(0, +))
        let (total, progress, started, earlier) = (plan.count, progress, start, earlierWireBytes)
        let sent: @Sendable () -> Void = {
            let count = done.add(1, ordering: .relaxed).newValue
            progress?(
                DiskMoveProgress(
                    blocksDone: count, blocksTotal: total,
                    wireBytes: earlier + connections.reduce(0) { $0 + $1.bytesSent },
                    elapsedSeconds: MonotonicClock.seconds(since: started)))
        }
        // A stream that fails ends this run on all (FIN): the others stop sending, the destination sees it.
        let endAll: @Sendable () -> Void = { for framed in connections { framed.stream.shutdownWrite() } }
        let run = { @Sendable (sender: DiskStripeSender) throws in
            do { try sender.run(sent: sent) } catch {
                endAll()
                throw error
            }
        }
        let threads = senders.dropFirst().map { sender in BackgroundThread { try run(sender) } }
        let first = Result { try run(senders[0]) }
        if case .failure = first { for extra in extraConnections { extra.stream.shutdownRead() } }
        let results = [first] + threads.map { $0.result() }
        for sender in senders { addCounts(of: sender.framer) }
        streamReached = senders.map(\.reached)
        earlierWireBytes += extraConnections.reduce(0) { $0 + $1.bytesSent }
        for extra in extraConnections { extra.close() }
        extraConnections = []
        let failures = results.compactMap { result -> (any Error)? in
            if case .failure(let error) = result { return error }
            return nil
        }
        if let failure = failures.first {
            guard canResumeStreams, failures.allSatisfy(Self.isLostConnection) else { throw failure }
            logger.warning(
                "lost a stream's connection while sending; resuming every stream",
                metadata: ["disk.error": "\(failure)", "disk.streams_reached": "\(streamReached)"])
            phase = .resuming
            return
        }
        report.blocksSent = plan.count
        phase = .finishing
    }

    /// Several streams resume in version 2 (Protocol.md 10.7).
    private var canResumeStreams: Bool { options.reconnectAttempts > 0 && (accept?.version ?? 1) >= 2 }

    static func isLostConnection(_ error: any Error) -> Bool {
        guard let transport = error as? TransportError else { return false }
        return isLost(transport)
    }

    private func addCounts(of framer: DiskBlockFramer) {
        report.zeroBlocks += framer.zeroBlocks
        report.lz4Blocks += framer.lz4Blocks
        report.rawBlocks += framer.rawBlocks
    }

    /// New connections after a loss, until one resumes: `DISK_RESUME` with the move's id and
    /// token, and the destination's answer says where to continue (it holds the first
    /// `blocks_held` blocks).
    private func resume() throws {
        guard let accept else { preconditionFailure("resume before accept") }
        while true {
            if let lost = connection {
                earlierWireBytes += lost.bytesSent
                lost.close()
                connection = nil
            }
            for extra in extraConnections {
                earlierWireBytes += extra.bytesSent
                extra.close()
            }
            extraConnections = []
            failedAttempts += 1
            MonotonicClock.sleep(milliseconds: 200 * min(failedAttempts, 10))
            do {
                try openConnection()
                if options.streams > 1 {
                    try resumeStreams(accept)
                } else {
                    continueAfter(try askResume(accept))
                }
                return
            } catch let error as TransportError where Self.isLost(error) || error.code == .connect {
                guard failedAttempts < options.reconnectAttempts else {
                    throw DiskMoveError(
                        .transport,
                        "the connection was lost and \(failedAttempts) attempts to resume failed (last: \(error)): retry the move"
                    )
                }
            }
        }
    }

    private func askResume(_ accept: DiskAccept) throws -> DiskResumeState {
        guard let connection else { preconditionFailure("ask before connecting") }
        try connection.send(DiskResume(moveID: accept.moveID, moveToken: accept.moveToken))
        let reply = try expect(.diskResumeState, on: connection)
        let state = try DiskResumeState(payload: reply.payload)
        guard state.blocksHeld <= UInt64(nextPosition + 1) else {
            throw ProtocolError(
                .invalidField,
                "DISK_RESUME_STATE holds \(state.blocksHeld) blocks; this source sent \(nextPosition + 1)")
        }
        return state
    }

    private func continueAfter(_ state: DiskResumeState) {
        report.resumes += 1
        report.blocksResent += max(0, nextPosition - Int(state.blocksHeld))
        logger.info(
            "resumed", metadata: ["disk.blocks_held": "\(state.blocksHeld)", "disk.blocks_sent": "\(nextPosition)"])
        nextPosition = Int(state.blocksHeld)
        phase = .sending
    }

    /// Several streams (Protocol.md 10.7): `DISK_RESUME` on a new stream 0, the destination's
    /// held counts for every stream (`DISK_RESUME_STATE`, `DISK_STREAMS_HELD`), then every other
    /// stream joins again; each resends from the blocks of its share the destination holds.
    private func resumeStreams(_ accept: DiskAccept) throws {
        guard let connection else { preconditionFailure("resume before connecting") }
        try connection.send(DiskResume(moveID: accept.moveID, moveToken: accept.moveToken))
        let state = try DiskResumeState(payload: try expect(.diskResumeState, on: connection).payload)
        let others = try DiskStreamsHeld(payload: try expect(.diskStreamsHeld, on: connection).payload)
        let held = [Int(state.blocksHeld)] + others.streams.map { Int($0.blocksHeld) }
        guard held.count == options.streams, zip(held, streamReached).allSatisfy({ $0 <= $1 }) else {
            throw ProtocolError(
                .invalidField,
                "the destination holds \(held) blocks per stream; this source sent \(streamReached) on its \(options.streams) streams"
            )
        }
        report.resumes += 1
        report.blocksResent += zip(streamReached, held).reduce(0) { $0 + $1.0 - $1.1 }
        logger.info("resumed every stream", metadata: ["disk.streams_held": "\(held)"])
        streamHeld = held
        try openStreams(accept)
        phase = .sending
    }

    /// The next frame, which must be `type` (a `REFUSE` names the destination's reason).
    private func expect(_ type: FrameType, on connection: FramedConnection) throws -> ReceivedFrame {
        let reply = try connection.receive()
        guard reply.type == type else {
            if reply.type == .refuse {
                let refuse = try Refuse(payload: reply.payload)
                throw DiskMoveError(.refused, "the destination refused to resume the move: \(refuse.message)")
            }
            throw ProtocolError(.unexpectedFrame, "expected \(type.wireName), got \(reply.type.wireName)")
        }
        return reply
    }

    /// A failure that a new connection may cure (not an `ABORT`, a refusal or a protocol error).
    static func isLost(_ error: TransportError) -> Bool {
        [.peerClosed, .io, .timeout].contains(error.code)
    }

    private func finish() throws {
        guard let connection, let map else { preconditionFailure("finish before send") }
        report.digest = try digestOfDisk(map)
        // After a resume the destination counts the blocks of all connections: each block once.
        let reply: ReceivedFrame
        do throws(TransportError) {
            try connection.send(DiskEnd(blocksSent: UInt64(plan.count), digest: report.digest))
            reply = try connection.receive()
        } catch {
            guard Self.isLost(error), options.reconnectAttempts > 0 else { throw error }
            // A destination that got DISK_END does not hold the move: a resume then fails, and
            // the outcome stays unknown. One that did not (the loss came first) resumes.
            logger.warning("lost the connection at the end; trying to resume", metadata: ["disk.error": "\(error)"])
            phase = .resuming
            return
        }
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
        report.wireBytesSent = earlierWireBytes + connection.bytesSent
        report.wireBytesReceived = connection.bytesReceived
        logger.info("the destination verified the disk", metadata: ["disk.digest": "0x\(hex(report.digest))"])
        phase = .done
    }

    // MARK: Pieces

    /// The digest (Protocol.md 10.4): from the hashes of the blocks sent, holes for the rest; onto
    /// an older copy, from this disk's whole table (whose sent blocks must hash as they did).
    private func digestOfDisk(_ map: DiskExtentMap) throws -> UInt64 {
        guard let table = diskTable else {
            let digest = DiskDigest(blockSize: options.blockSize)
            for (position, index) in plan.enumerated() { digest.add(block: index, hash: hashes[position]) }
            return digest.finish(blockCount: map.blockCount)
        }
        for (position, index) in plan.enumerated() where hashes[position] != table[index] {
            throw DiskMoveError(
                .configuration,
                "block \(index) of \(options.path) changed while it was moved: stop the guest that uses the disk and retry"
            )
        }
        return DiskDigest.of(table: table, blockSize: options.blockSize)
    }
}

func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}
