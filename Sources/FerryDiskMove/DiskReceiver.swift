import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc
import Logging

/// What `DiskReceiver` needs to take one disk.
public struct DiskReceiveOptions: Sendable {
    /// Where the disk goes; it is written as `PATH.partial` and renamed once verified.
    public var path: String
    public var security: ConnectionSecurity
    /// Replace an existing `PATH` (only once the new copy verified).
    public var overwrite: Bool
    /// An older copy of the disk to start from (Protocol.md 10.8; may be `path` itself, which is
    /// then replaced once the new copy verified): only the blocks that differ cross the wire. Not
    /// used when the file does not exist, or with a version-1 source.
    public var base: String?
    /// How long to wait for a source; nil: forever.
    public var acceptTimeoutMs: Int?
    /// How long a source may stay silent once it has offered its disk.
    public var idleTimeoutMs: Int
    /// How long a move whose connection was lost waits for its source's `DISK_RESUME`.
    public var resumeWindowMs: Int = 30_000
    /// How long the source has, after `DISK_ACCEPT`, to open all its streams (Protocol.md 10.7).
    public var joinTimeoutMs: Int = 10_000
    public var destinationName: String
    public var cancellation: DiskMoveCancellation?

    public init(
        path: String, security: ConnectionSecurity = .none, overwrite: Bool = false, acceptTimeoutMs: Int? = nil,
        idleTimeoutMs: Int = 60_000, destinationName: String = "ferry disk receive"
    ) {
        self.path = path
        self.security = security
        self.overwrite = overwrite
        self.acceptTimeoutMs = acceptTimeoutMs
        self.idleTimeoutMs = idleTimeoutMs
        self.destinationName = destinationName
    }

    /// The file written while blocks arrive.
    public var partialPath: String { path + ".partial" }
}

/// The destination of a disk move (Protocol.md section 10): greets a source, checks that the disk
/// fits before anything is sent, writes `PATH.partial` keeping holes as holes, checks every
/// block's hash and the disk's digest, and renames the copy to `PATH` only then. On any failure
/// `PATH.partial` is removed and `PATH` is left as it was. One phase per method.
public final class DiskReceiver {
    /// The destination's states, in order (Protocol.md 10.3).
    public enum Phase: String, Sendable {
        case accepting, greeting, admitting, receiving, verifying, committing, done
    }

    /// How long a new connection has to authenticate and send `DISK_HELLO` (as section 9.5).
    static let greetingTimeoutMs = 5000

    public let options: DiskReceiveOptions
    public private(set) var phase = Phase.accepting
    public private(set) var report = DiskMoveReport()
    private let listener: TCPListener
    private let logger: Logger
    private let progress: DiskMoveProgressHandler?
    private var connection: FramedConnection?
    private var hello: DiskHello?
    /// Stream 0's writer (the control connection's); set while `PATH.partial` exists.
    private var blocks: DiskBlockWriter?
    /// Streams 1 … N − 1, with several streams; their writers by stream index (kept across a
    /// resume), and the bytes of their connections that were lost.
    private var streams: DiskJoinedStreams?
    private var streamWriters: [Int: DiskBlockWriter] = [:]
    private var makeWriter: ((Int) -> DiskBlockWriter)?
    private var earlierStreamBytes: UInt64 = 0
    private var start: UInt64 = 0
    /// The move's name and secret (`DISK_ACCEPT`), for a `DISK_RESUME`.
    private var moveID: UInt64 = 0
    private var moveToken = SessionToken.none
    /// Set while the move waits for its source to come back (`MonotonicClock.milliseconds`).
    private var resumeDeadline: Int?
    /// When `--accept-timeout` ends (`MonotonicClock.milliseconds`), from the start of `run()`.
    private var acceptDeadline: Int?
    /// The version chosen (`DISK_ACCEPT.version`), and the `DISK_BLOCK` frames due: `DISK_HELLO`'s
    /// count, or `DISK_DELTA`'s on a base.
    private var version = DiskMoveLimits.version
    private var blocksExpected = 0
    /// The older copy `PATH.partial` started from (Protocol.md 10.8), if any.
    private var basePath: String?
    private var baseTable: [UInt64] = []

    public init(
        listener: TCPListener, options: DiskReceiveOptions, logger: Logger, progress: DiskMoveProgressHandler? = nil
    ) {
        self.listener = listener
        self.options = options
        self.logger = logger
        self.progress = progress
    }

    /// Takes one disk; returns the report once `PATH` holds the verified copy.
    public func run() throws(DiskMoveError) -> DiskMoveReport {
        defer { connection?.close() }
        acceptDeadline = options.acceptTimeoutMs.map { MonotonicClock.milliseconds() + $0 }
        do {
            while phase != .done {
                do {
                    try step()
                } catch let lost as ConnectionLost {
                    if let cancelled = options.cancellation?.error(during: phase.rawValue) { throw cancelled }
                    // Several streams resume in version 2 only (Protocol.md 10.7).
                    if let streams = hello?.streamCount, streams > 1, version < 2 { throw lost.error }
                    holdForResume(lost)
                }
            }
        } catch {
            let failure =
                options.cancellation?.error(during: phase.rawValue) ?? DiskMoveError.wrap(error, during: phase.rawValue)
            discard(failure)
            throw failure
        }
        report.seconds = MonotonicClock.seconds(since: start)
        return report
    }

    private func step() throws {
        if let cancelled = options.cancellation?.error(during: phase.rawValue) { throw cancelled }
        switch phase {
        case .accepting: try accept()
        case .greeting: greet()
        case .admitting: try admit()
        case .receiving: try receiveBlocks()
        case .verifying: try verify()
        case .committing: try commit()
        case .done: break
        }
    }

    /// The connection broke while blocks flowed: keep `PATH.partial` and what verified, and
    /// listen for the source's `DISK_RESUME` for `resumeWindowMs`.
    private func holdForResume(_ lost: ConnectionLost) {
        logger.warning(
            "lost the source's connection; waiting for it to resume",
            metadata: [
                "disk.blocks_held": "\(blocks?.blocksReceived ?? 0)", "disk.error": "\(lost.error)",
                "disk.resume_window_ms": "\(options.resumeWindowMs)",
            ])
        connection?.close()
        connection = nil
        if let streams {
            // Every stream stops; their writers keep what they verified (`streamWriters`).
            streams.end()
            earlierStreamBytes += streams.bytesReceived
            self.streams = nil
        }
        resumeDeadline = MonotonicClock.milliseconds() + options.resumeWindowMs
        phase = .accepting
    }

    // MARK: Phases

    private func accept() throws {
        let deadline = resumeDeadline ?? acceptDeadline
        let remaining = deadline.map { max(0, $0 - MonotonicClock.milliseconds()) }
        // In slices of 250 ms when a cancel may come: a blocked accept does not see it.
        let slice = options.cancellation == nil ? remaining : min(remaining ?? 250, 250)
        let accepted: Result<TCPStream, TransportError>
        do throws(TransportError) {
            accepted = .success(try listener.accept(timeoutMs: slice))
        } catch {
            accepted = .failure(error)
        }
        guard case .success(let stream) = accepted else {
            if case .failure(let error) = accepted, error.code != .timeout { throw error }
            if deadline.map({ MonotonicClock.milliseconds() < $0 }) ?? true { return }  // a slice; accept again
            if resumeDeadline != nil {
                throw DiskMoveError(
                    .transport,
                    "the source's connection was lost after \(blocks?.blocksReceived ?? 0) blocks and it did not resume within \(options.resumeWindowMs / 1000) s: retry the move"
                )
            }
            throw DiskMoveError(
                .transport,
                "no source sent a disk within --accept-timeout (\(options.acceptTimeoutMs ?? 0) ms): start ferry disk send toward \(listener.localDescription)"
            )
        }
        try stream.setReceiveTimeout(ms: Self.greetingTimeoutMs)
        connection = FramedConnection(stream)
        options.cancellation?.watch(stream)
        if resumeDeadline == nil { start = MonotonicClock.now() }
        phase = .greeting
    }

    /// Authenticates the connection and reads its `DISK_HELLO`. A connection that fails here
    /// (another key, another protocol, silence) is logged and closed, and the receiver listens
    /// again: a stranger cannot end it.
    private func greet() {
        guard let connection else { preconditionFailure("greet before accept") }
        do {
            let first = try connection.receive()
            let frame = try connection.authenticate(asServer: options.security, firstFrame: first)
            if blocks != nil {
                try resume(frame, on: connection)
                return
            }
            guard frame.type == .diskHello else {
                try? connection.send(
                    Refuse(reason: .malformed, message: "expected DISK_HELLO: this is a ferry disk receive listener"))
                throw ProtocolError(.unexpectedFrame, "the first frame is \(frame.type.wireName), not DISK_HELLO")
            }
            do throws(ProtocolError) {
                hello = try DiskHello(payload: frame.payload)
            } catch {
                try? connection.send(Refuse(reason: .malformed, message: "DISK_HELLO: \(error.message)"))
                throw error
            }
            report.security = connection.security.description
            report.peer = connection.peerDescription
            phase = .admitting
        } catch {
            logger.warning(
                "closed a connection that did not offer a disk; listening again",
                metadata: ["disk.peer": "\(connection.peerDescription)", "disk.error": "\(error)"])
            connection.close()
            self.connection = nil
            phase = .accepting
        }
    }

    /// A move is held: only its source's `DISK_RESUME` continues it.
    private func resume(_ frame: ReceivedFrame, on connection: FramedConnection) throws {
        guard let blocks else { return }
        guard frame.type == .diskResume, let resume = try? DiskResume(payload: frame.payload),
            resume.moveID == moveID, resume.moveToken.matches(moveToken)
        else {
            try? connection.send(
                Refuse(reason: .busy, message: "this destination is receiving another disk; try again when it is done"))
            throw ProtocolError(.unexpectedFrame, "a \(frame.type.wireName) while a move waits for its DISK_RESUME")
        }
        try connection.send(
            DiskResumeState(blocksHeld: UInt64(blocks.blocksReceived), nextBlock: UInt64(blocks.nextBlock)))
        try connection.stream.setReceiveTimeout(ms: options.idleTimeoutMs)
        if let count = hello?.streamCount, count > 1 {
            let held = (1..<Int(count)).map { writer(forStream: $0) }.map {
                DiskResumeState(blocksHeld: UInt64($0.blocksReceived), nextBlock: UInt64($0.nextBlock))
            }
            try connection.send(DiskStreamsHeld(streams: held))
            try joinStreams(count: Int(count), on: connection)
        }
        report.resumes += 1
        resumeDeadline = nil
        logger.info("the source resumed", metadata: ["disk.blocks_held": "\(blocks.blocksReceived)"])
        phase = .receiving
    }

    /// Stream `index`'s writer: the one that holds its blocks so far, or a new one.
    private func writer(forStream index: Int) -> DiskBlockWriter {
        if let writer = streamWriters[index] { return writer }
        guard let makeWriter else { preconditionFailure("streams before admit") }
        let writer = makeWriter(index)
        streamWriters[index] = writer
        return writer
    }

    /// Accepts streams 1 … `count` − 1 (`DISK_JOIN`), after `DISK_ACCEPT` or a resume.
    private func joinStreams(count: Int, on connection: FramedConnection) throws {
        streams = try DiskJoinedStreams(
            count: count, joinTimeoutMs: options.joinTimeoutMs, listener: listener, security: options.security,
            moveID: moveID, moveToken: moveToken,
            idleTimeoutMs: options.idleTimeoutMs, makeWriter: { writer(forStream: $0) },
            onFailure: { [stream = connection.stream] in stream.shutdownRead() }, logger: logger)
    }

    /// Checks the version, the existing file and the free space, and creates `PATH.partial`,
    /// before any block is sent: a refusal names the numbers and leaves nothing behind. On a base
    /// (Protocol.md 10.8) it then offers the old copy's block hashes and reads `DISK_DELTA`.
    private func admit() throws {
        guard let connection, let hello else { preconditionFailure("admit before greet") }
        report.diskSize = Int(hello.diskSize)
        report.allocatedBytes = Int(hello.allocatedBytes)
        report.blockSize = Int(hello.blockSize)
        report.blockCount = Int(hello.blockCount)
        let replacing = options.overwrite || options.base == options.path
        if let refusal = try DiskAdmission.refusal(for: hello, path: options.path, overwrite: replacing) {
            try? connection.send(refusal)
            throw DiskMoveError(.refused, "refused the disk from \(connection.peerDescription): \(refusal.message)")
        }
        version = min(hello.versionMax, DiskMoveLimits.version)
        blocksExpected = Int(hello.blocksToSend)
        basePath = usableBase(hello)
        let file = try createPartial(hello)
        let count = Int(hello.streamCount)
        let punchZeros = basePath != nil
        let makeWriter = { (stream: Int) in
            let writer = DiskBlockWriter(
                file: file, diskSize: Int(hello.diskSize), blockSize: Int(hello.blockSize), stream: stream)
            writer.punchZeros = punchZeros
            return writer
        }
        self.makeWriter = makeWriter
        blocks = makeWriter(0)
        let free = try ImageFile.freeBytes(directoryOf: options.path)
        moveID = UInt64.random(in: 1...UInt64.max)
        moveToken = SessionToken.random()
        try connection.send(
            DiskAccept(
                version: version, flags: basePath == nil ? 0 : DiskAccept.baseFlag, freeBytes: free, moveID: moveID,
                moveToken: moveToken, destinationName: options.destinationName))
        try connection.stream.setReceiveTimeout(ms: options.idleTimeoutMs)
        if basePath != nil {
            try offerBaseHashes(on: connection)
            try readDelta(hello, on: connection)
        }
        if count > 1 { try joinStreams(count: count, on: connection) }
        logger.info(
            "accepted a disk",
            metadata: [
                "disk.source": "\(hello.sourceName)", "disk.name": "\(hello.diskName)",
                "disk.size": "\(hello.diskSize)", "disk.version": "\(version)",
                "disk.allocated": "\(hello.allocatedBytes)", "disk.blocks": "\(blocksExpected)",
            ])
        phase = .receiving
    }

    /// The older copy to start from: `options.base` when it exists, the source speaks version 2
    /// and the hash table is not too large; otherwise the move starts from a hole (a full move).
    private func usableBase(_ hello: DiskHello) -> String? {
        guard let base = options.base, ImageFile.exists(path: base) else { return nil }
        guard version >= 2, hello.blockCount <= UInt64(DiskMoveLimits.maxBaseBlocks) else {
            logger.warning(
                "not using the older copy: a full move follows",
                metadata: [
                    "disk.base": "\(base)", "disk.version": "\(version)", "disk.blocks": "\(hello.blockCount)",
                    "disk.why": "\(version < 2 ? "the source speaks version 1 only" : "the disk has too many blocks")",
                ])
            return nil
        }
        return base
    }

    /// `PATH.partial`: a hole of the disk's size, or on a base a copy of the old copy (holes
    /// kept), made before `DISK_ACCEPT` so that its hashes can follow.
    private func createPartial(_ hello: DiskHello) throws -> PositionedFile {
        guard let basePath else {
            return try DiskBlockWriter.createPartial(path: options.partialPath, size: Int(hello.diskSize))
        }
        let started = MonotonicClock.now()
        do {
            let (file, method) = try DiskBase.copy(
                base: basePath, to: options.partialPath, diskSize: Int(hello.diskSize))
            report.baseCopy = method.rawValue
            baseTable = try DiskBase.blockHashes(
                path: options.partialPath, diskSize: Int(hello.diskSize), blockSize: Int(hello.blockSize))
            report.baseSeconds = MonotonicClock.seconds(since: started)
            logger.info(
                "started from the older copy",
                metadata: [
                    "disk.base": "\(basePath)", "disk.copy": "\(method.rawValue)",
                    "disk.seconds": "\(report.baseSeconds)",
                ])
            return file
        } catch {
            try? ImageFile.remove(path: options.partialPath)
            throw error
        }
    }

    /// The old copy's block hashes, `DISK_BASE_HASHES` frames in order over the whole grid.
    private func offerBaseHashes(on connection: FramedConnection) throws {
        let before = connection.bytesSent
        var first = 0
        while first < baseTable.count {
            let end = min(first + DiskMoveLimits.maxHashesPerFrame, baseTable.count)
            try connection.send(DiskBaseHashes(firstBlock: UInt64(first), hashes: Array(baseTable[first..<end])))
            first = end
        }
        report.baseHashBytes = connection.bytesSent - before
    }

    /// `DISK_DELTA`: how many blocks follow, and how many the old copy holds already.
    private func readDelta(_ hello: DiskHello, on connection: FramedConnection) throws {
        let frame = try connection.receive()
        guard frame.type == .diskDelta else {
            throw ProtocolError(
                .unexpectedFrame, "expected DISK_DELTA after the base hashes, got \(frame.type.wireName)")
        }
        let delta = try DiskDelta(payload: frame.payload)
        guard delta.blocksToSend + delta.blocksUnchanged == hello.blockCount else {
            throw ProtocolError(
                .invalidField,
                "DISK_DELTA: \(delta.blocksToSend) blocks to send and \(delta.blocksUnchanged) unchanged do not make the disk's \(hello.blockCount)"
            )
        }
        blocksExpected = Int(delta.blocksToSend)
        report.blocksUnchanged = Int(delta.blocksUnchanged)
    }

    private func receiveBlocks() throws {
        guard let connection, let blocks else { preconditionFailure("receive before admit") }
        while true {
            let frame: ReceivedFrame
            do throws(TransportError) {
                frame = try connection.receive()
            } catch {
                if let failed = streams?.firstFailure { throw failed }  // it woke this read
                guard [.peerClosed, .timeout, .io].contains(error.code) else { throw error }
                throw ConnectionLost(error: error)
            }
            switch frame.type {
            case .diskBlock:
                try blocks.apply(frame.payload)
                progress?(
                    DiskMoveProgress(
                        blocksDone: blocks.blocksReceived, blocksTotal: blocksExpected,
                        wireBytes: connection.bytesReceived, elapsedSeconds: MonotonicClock.seconds(since: start)))
            case .diskEnd:
                let end = try DiskEnd(payload: frame.payload)
                report.digest = end.digest
                try streams?.wait()
                let arrived = blocks.blocksReceived + (streams?.blocksReceived ?? 0)
                guard end.blocksSent == UInt64(blocksExpected), arrived == blocksExpected else {
                    throw DiskMoveError(
                        .verification,
                        "DISK_END says \(end.blocksSent) blocks were sent, \(blocksExpected) were announced and \(arrived) arrived: retry the move"
                    )
                }
                phase = .verifying
                return
            default:
                throw ProtocolError(.unexpectedFrame, "expected DISK_BLOCK or DISK_END, got \(frame.type.wireName)")
            }
        }
    }

    /// The digest of the copy: from the blocks' hashes as they arrived, or on a base from the
    /// whole of `PATH.partial` hashed again (the copied old blocks included).
    private func verify() throws {
        guard let blocks, let hello else { preconditionFailure("verify before receive") }
        var computed = try DiskBlockWriter.digest(
            of: [blocks] + (streams?.writers ?? []), blockSize: Int(hello.blockSize), blockCount: Int(hello.blockCount))
        if basePath != nil {
            let started = MonotonicClock.now()
            computed = DiskDigest.of(
                table: try DiskBase.blockHashes(
                    path: options.partialPath, diskSize: Int(hello.diskSize), blockSize: Int(hello.blockSize)),
                blockSize: Int(hello.blockSize))
            report.baseSeconds += MonotonicClock.seconds(since: started)
        }
        guard computed == report.digest else {
            throw DiskMoveError(
                .verification,
                "the disk's digest is 0x\(hex(computed)) here, the source sent 0x\(hex(report.digest)): a block was lost or damaged; retry the move"
            )
        }
        phase = .committing
    }

    /// Syncs the copy, renames it over `PATH`, syncs the directory, then tells the source.
    private func commit() throws {
        guard let connection, let blocks else { preconditionFailure("commit before verify") }
        try blocks.sync()  // the file all streams wrote
        try ImageFile.rename(from: options.partialPath, to: options.path)
        try ImageFile.syncDirectory(of: options.path)
        self.blocks = nil
        let writers = [blocks] + (streams?.writers ?? [])
        report.blocksSent = writers.reduce(0) { $0 + $1.blocksReceived }
        report.zeroBlocks = writers.reduce(0) { $0 + $1.zeroBlocks }
        report.lz4Blocks = writers.reduce(0) { $0 + $1.lz4Blocks }
        report.rawBlocks = writers.reduce(0) { $0 + $1.rawBlocks }
        report.bytesWritten = UInt64(writers.reduce(0) { $0 + $1.bytesWritten })
        report.wireBytesReceived = connection.bytesReceived + earlierStreamBytes + (streams?.bytesReceived ?? 0)
        report.wireBytesSent = connection.bytesSent
        // The copy is in place: a source that misses this answer reports a failure, but the
        // destination's disk is verified and stays.
        do {
            try connection.send(DiskVerified(digest: report.digest, bytesWritten: report.bytesWritten))
        } catch {
            logger.warning(
                "the disk is in place but DISK_VERIFIED did not reach the source", metadata: ["disk.error": "\(error)"])
        }
        logger.info(
            "the disk is in place",
            metadata: ["disk.path": "\(options.path)", "disk.digest": "0x\(hex(report.digest))"])
        phase = .done
    }

    // MARK: Failure

    /// Removes `PATH.partial` and tells the source why (an `ABORT`, unless the source aborted or
    /// was refused).
    private func discard(_ failure: DiskMoveError) {
        streams?.stop()
        if blocks != nil {
            blocks = nil
            try? ImageFile.remove(path: options.partialPath)
        }
        if let connection, failure.code != .refused, failure.code != .peerAborted {
            try? connection.send(Abort(reason: failure.abortReason, message: failure.message))
            Self.drain(connection.stream, forMs: 2000)
        }
    }

    /// Ends this side (FIN) and reads and drops what the source still sends, until it closes or
    /// `forMs` pass: closing a socket with unread bytes would reset the connection, and the source
    /// could then lose the `ABORT` that says which block failed.
    static func drain(_ stream: TCPStream, forMs limit: Int) {
        stream.shutdownWrite()
        let deadline = MonotonicClock.milliseconds() + limit
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        try? stream.setReceiveTimeout(ms: 100)
        while MonotonicClock.milliseconds() < deadline {
            do throws(TransportError) {
                if try stream.readAvailable(into: buffer) == 0 { return }
            } catch {
                if error.code != .timeout { return }
            }
        }
    }
}

/// The connection broke while blocks flowed (closed, reset, silent): the move can resume.
struct ConnectionLost: Error {
    let error: TransportError
}
