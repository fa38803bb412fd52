import Dispatch
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Synchronization

/// The source's page streams: the control connection (stream 0) plus `JOIN`ed extra
/// connections, one `PageStreamer` and one thread each, pages striped across them.
final class SourceStreams {
    private(set) var connections: [FramedConnection]
    let streamers: [PageStreamer]
    let hashTable: PageHashTable
    let stripes: PageStripes

    /// Opens `count - 1` extra connections to `endpoint` and joins them to `sessionID`, presenting
    /// `token`. Every stream counts its batches in `meter`.
    init(
        control: FramedConnection, count: Int, endpoint: Endpoint, sessionID: UInt64, token: SessionToken,
        options: SourceOptions,
        memory: GuestMemory, pageSize: Int, pageCount: Int, peerCodecs: CodecSet, meter: RoundMeter? = nil
    ) throws {
        let connections =
            [control]
            + (try Self.openExtraStreams(
                count: count, endpoint: endpoint, sessionID: sessionID, token: token, options: options))
        self.connections = connections
        let table = PageHashTable(pageCount: pageCount)
        let stripes = PageStripes(streamCount: connections.count)
        self.hashTable = table
        self.stripes = stripes
        streamers = connections.enumerated().map { index, connection in
            let streamer = PageStreamer(
                memory: memory, pageSize: pageSize, connection: connection,
                compression: options.compression, peerCodecs: peerCodecs,
                batchBytes: options.batchBytes, hashTable: table, stripes: stripes, stream: index, meter: meter)
            streamer.cancellation = options.cancellation
            streamer.limiter = options.maxBandwidth.map {
                BandwidthLimiter(bytesPerSecond: $0 / Double(connections.count))
            }
            return streamer
        }
    }

    private static func openExtraStreams(
        count: Int, endpoint: Endpoint, sessionID: UInt64, token: SessionToken,
        options: SourceOptions
    ) throws -> [FramedConnection] {
        var connections: [FramedConnection] = []
        do {
            for index in 1..<max(count, 1) {
                let stream = try TCPStream.connect(endpoint, timeoutMs: options.connectTimeoutMs)
                try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
                try stream.setSendTimeout(ms: options.stallTimeoutMs)
                let connection = FramedConnection(stream)
                connections.append(connection)
                try connection.authenticate(asClient: options.security)
                try connection.send(Join(sessionID: sessionID, sessionToken: token, streamIndex: UInt16(index)))
            }
        } catch {
            for extra in connections { extra.close() }
            throw error
        }
        return connections
    }

    /// After a resume: `control` is the new control connection; opens and joins new page streams
    /// and hands them to the streamers, which keep their hash table, encoding statistics and
    /// counters.
    func reattach(
        control: FramedConnection, endpoint: Endpoint, sessionID: UInt64, token: SessionToken, options: SourceOptions
    ) throws {
        let fresh =
            [control]
            + (try Self.openExtraStreams(
                count: streamers.count, endpoint: endpoint,
                sessionID: sessionID, token: token, options: options))
        connections = fresh
        for (streamer, connection) in zip(streamers, fresh) { streamer.connection = connection }
    }

    /// Closes every connection, the control connection included (after a loss: threads blocked
    /// on any of them return).
    func closeAll() {
        for connection in connections { connection.close() }
    }

    /// Pages the streams have handed to their connections in the round being sent (or the last one).
    var pagesSentInRound: Int { streamers.reduce(0) { $0 + $1.roundPagesSent } }

    /// Sends the pages set in `pages` on all streams at once; each extra stream ends with
    /// `STREAM_ROUND_END`.
    ///
    /// `protecting`: a tracker started with `startDeferred()` (round 0). The stream threads then
    /// write-protect the region as they go, each page before it is read (see
    /// `RoundZeroProtection`), so the protection cost overlaps the network and is spread over
    /// the streams; when this returns, with or without error, every page of the region is
    /// protected (a round cut off by a lost connection leaves no page unwatched).
    ///
    /// A connection that fails closes all of them, so that the other streams stop at once
    /// instead of sending the rest of their round for nothing.
    func send(
        pages: DirtyBitmap, round: UInt32, protecting tracker: (any DirtyTracker)? = nil,
        holes: ImageHoles? = nil
    ) throws -> StreamRoundResult {
        let outcomes = StreamOutcomes(count: streamers.count)
        let streamers = self.streamers
        let connections = self.connections
        let count = streamers.count
        let protection = tracker.map { RoundZeroProtection(tracker: $0, pageCount: pages.count, holes: holes) }
        DispatchQueue.concurrentPerform(iterations: count) { index in
            do {
                let result = try streamers[index].send(pages: pages, round: round, protection: protection)
                if index > 0 {
                    try connections[index].send(
                        StreamRoundEnd(round: round, batches: UInt64(result.batches), pages: UInt64(result.pages)))
                }
                outcomes.set(index, .success(result))
            } catch {
                if let transport = error as? TransportError, transport.code != .peerAborted,
                    transport.code != .protocolViolation
                {
                    // Wakes every stream blocked in a write. The control connection is shut for
                    // writing only: the destination's ABORT, if that is why the stream failed,
                    // may still be on its way in (`SourceAgent.abortWaiting`).
                    for connection in connections.dropFirst() { connection.close() }
                    connections.first?.stream.shutdownWrite()
                }
                outcomes.set(index, .failure(error))
            }
        }
        do {
            return try outcomes.combined()
        } catch {
            try protection?.protectAll()
            throw error
        }
    }

    var wireBytes: UInt64 { streamers.reduce(0) { $0 + $1.wireBytes } }

    /// Bytes written to the connections that the destination's kernel has not acknowledged yet
    /// (`SIOCOUTQ`, summed): what a blackout starting now would wait for before its own pages.
    var queuedBytes: Int { connections.reduce(0) { $0 + $1.stream.unacknowledgedBytes } }

    var holePages: Int { streamers.reduce(0) { $0 + $1.holePages } }

    var counts: EncodingCounts {
        var total = EncodingCounts()
        for streamer in streamers { total.add(streamer.counts) }
        return total
    }

    func digest() -> UInt64 { hashTable.digest() }

    /// Bytes written on all connections that the destination has not acknowledged yet.
    var unacknowledgedBytes: Int { connections.reduce(0) { $0 + $1.stream.unacknowledgedBytes } }
    /// Bytes the destination has acknowledged on the current connections (TCP), summed.
    var acknowledgedBytes: UInt64 { connections.reduce(0) { $0 &+ ($1.stream.acknowledgedBytes ?? 0) } }

    func closeExtraStreams() {
        for connection in connections.dropFirst() { connection.close() }
    }
}

/// Round 0 with a deferred tracker: the region is write-protected from its start upwards, in
/// chunks, by whichever stream thread first needs a chunk, always before any stream reads a
/// page of it.
///
/// Why no write is lost: a page is protected, then read. A write that completes before the
/// protection is seen by the read (the read comes after it); a write that completes after the
/// protection is recorded and reported by the harvest that ends round 0 (or a later one).
/// A stream reads page p only once `frontier` > p, and `frontier` is raised (release) only
/// after `protect(pages:)` of everything below it returned; no page is protected twice.
///
/// Why a shared frontier and not each stream protecting its own 512-page blocks: each
/// protection call costs ~60 µs on top of ~0.1 µs per page here (TLB shootdown, VMA work), so
/// 2 GiB in 2 MiB calls costs ~2.5 times the whole-region protection; in 32 MiB chunks it costs
/// about the same as the whole region. The streams walk the region at about the same pace
/// (stream s sends blocks s, s+N, s+2N, ...), so the frontier is one chunk ahead of the
/// farthest stream: the stream entering the last protected chunk protects the next one while
/// the others keep sending, and a stream waits only if it overtakes the frontier.
///
/// Pages that round 0 does not send (a sparse bitmap) are protected as the frontier passes
/// them, and each stream protects the rest of the region when it finishes, so when round 0
/// ends every page is protected. (Today round 0 sends every page.)
///
/// **Holes.** With `holes` (the guest image file), each chunk's file holes are looked up right
/// after the chunk is protected (runs of 16 pages or more, with a bounded number of `lseek`s), and
/// `isHole` tells the streams which pages to send as zero markers without reading them (a guest
/// that has touched a quarter of its memory leaves the rest as holes; reading them would fault in
/// fresh zero pages). A page that is a hole after its protection reads as zeros
/// now, and any later write to it is recorded by the tracker (uffd write-protects unpopulated
/// pages too; mprotect covers the range), so it is sent again in round 1.
///
/// `@unchecked Sendable`: `holeBits` is written only under `protecting`, for pages of the chunk
/// being protected, before the frontier's release store that makes them readable; streams read a
/// page's bit only after an acquire load of the frontier saw it protected.
final class RoundZeroProtection: @unchecked Sendable {
    /// Pages per protection call: 32 MiB of 4 KiB pages, whole 512-page blocks.
    static let pagesPerChunk = 16 * PageStripes.pagesPerStripe

    let tracker: any DirtyTracker
    let pageCount: Int
    let holes: ImageHoles?
    private let holeBits: PageBits
    /// Every page below it is protected.
    private let frontier = Atomic<Int>(0)
    /// Held while protecting, so chunks are protected once, in order.
    private let protecting = Mutex(())

    init(tracker: any DirtyTracker, pageCount: Int, holes: ImageHoles? = nil) {
        self.tracker = tracker
        self.pageCount = pageCount
        self.holes = holes
        holeBits = PageBits(count: pageCount)
    }

    /// Whether `page` (protected already) was a hole of the image file when it was protected.
    @inline(__always)
    func isHole(_ page: Int) -> Bool { holeBits[page] }

    /// Makes sure `page` is protected, and the chunk after its chunk too (lookahead); returns a
    /// page bound below which the caller, walking upwards, need not call again (all protected,
    /// and calling again at it keeps the lookahead going).
    func protect(through page: Int) throws -> Int {
        let wanted = min(pageCount, (page / Self.pagesPerChunk + 2) * Self.pagesPerChunk)
        var current = frontier.load(ordering: .acquiring)
        if current < wanted {
            if page < current {
                // Already protected: extend the lookahead unless another stream is at it.
                if let raised = try protecting.withLockIfAvailable({ _ in try raise(to: wanted) }) { current = raised }
            } else {
                current = try protecting.withLock { _ in try raise(to: wanted) }
            }
        }
        precondition(current > page, "page \(page) read before its protection (frontier \(current))")
        // Call again on entering the last protected chunk, to protect the next one in time.
        return current >= pageCount ? pageCount : max(page + 1, current - Self.pagesPerChunk)
    }

    /// Protects every page not protected yet (a stream calls it when it has sent its pages).
    func protectAll() throws {
        if frontier.load(ordering: .acquiring) < pageCount {
            _ = try protecting.withLock { _ in try raise(to: pageCount) }
        }
    }

    /// With `protecting` held: protects up to `wanted` and publishes it; returns the frontier.
    private func raise(to wanted: Int) throws -> Int {
        let current = frontier.load(ordering: .acquiring)
        guard current < wanted else { return current }
        try tracker.protect(pages: current..<wanted)
        // Only large holes, with a few lseeks per chunk: skipping a scattered zero page saves
        // one 4 KiB read but costs two system calls. `SourceAgent.faultIn` searches the same way.
        try holes?.forEachLargeHole(
            in: current..<wanted, minimumPages: ImageHoles.largeHolePages,
            maxCalls: ImageHoles.callsPerChunk
        ) { range in
            for page in range { holeBits.set(page) }
        }
        frontier.store(wanted, ordering: .releasing)
        return wanted
    }
}

/// Per-stream results of one round, filled from worker threads (guarded by a `Mutex`).
private final class StreamOutcomes: Sendable {
    private let results: Mutex<[Result<StreamRoundResult, any Error>?]>

    init(count: Int) { results = Mutex(Array(repeating: nil, count: count)) }

    func set(_ index: Int, _ result: Result<StreamRoundResult, any Error>) {
        results.withLock { $0[index] = result }
    }

    /// The sum of all streams, or the first stream's error.
    func combined() throws -> StreamRoundResult {
        let results = self.results.withLock { $0 }
        var total = StreamRoundResult()
        for (index, result) in results.enumerated() {
            switch result {
            case .success(let part): total.add(part)
            case .failure(let error):
                throw index == 0 ? error : MigrationError.wrap(error, during: "page stream \(index)", guest: .source)
            case nil: preconditionFailure("stream \(index) reported no result")
            }
        }
        return total
    }
}
