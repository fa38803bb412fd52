import Dispatch
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation

/// The source's page streams: the control connection (stream 0) plus `JOIN`ed extra
/// connections, one `PageStreamer` and one thread each, pages striped across them.
final class SourceStreams {
    let connections: [FramedConnection]
    let streamers: [PageStreamer]
    let hashTable: PageHashTable
    let stripes: PageStripes

    /// Opens `count - 1` extra connections to `endpoint` and joins them to `sessionID`.
    init(control: FramedConnection, count: Int, endpoint: Endpoint, sessionID: UInt64, options: SourceOptions,
         memory: UnsafeMutableRawPointer, pageSize: Int, pageCount: Int) throws {
        var connections = [control]
        do {
            for index in 1..<max(count, 1) {
                let stream = try TCPStream.connect(endpoint, timeoutMs: options.connectTimeoutMs)
                try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
                let connection = FramedConnection(stream)
                connections.append(connection)
                try connection.send(Join(sessionID: sessionID, streamIndex: UInt16(index)))
            }
        } catch {
            for extra in connections.dropFirst() { extra.close() }
            throw error
        }
        self.connections = connections
        let table = PageHashTable(pageCount: pageCount)
        let stripes = PageStripes(streamCount: connections.count)
        self.hashTable = table
        self.stripes = stripes
        streamers = connections.enumerated().map { index, connection in
            let streamer = PageStreamer(memory: memory, pageSize: pageSize, connection: connection,
                                        compression: options.compression, batchBytes: options.batchBytes,
                                        hashTable: table, stripes: stripes, stream: index)
            streamer.limiter = options.maxBandwidth.map { BandwidthLimiter(bytesPerSecond: $0 / Double(connections.count)) }
            return streamer
        }
    }

    /// Sends the pages set in `pages` on all streams at once; each extra stream ends with
    /// `STREAM_ROUND_END`. `progress` gets an estimate of the pages sent so far.
    ///
    /// `protecting`: a tracker started with `startDeferred()` (round 0). Each stream thread then
    /// write-protects its blocks as it goes, each just before reading it (see `StripeProtection`),
    /// so the protection cost overlaps the network and is spread over the streams; when this
    /// returns without error every page of the region is protected.
    func send(pages: DirtyBitmap, round: UInt32, protecting tracker: (any DirtyTracker)? = nil,
              progress: (@Sendable (Int) -> Void)? = nil) throws -> StreamRoundResult {
        let outcomes = StreamOutcomes(count: streamers.count)
        let streamers = self.streamers
        let connections = self.connections
        let count = streamers.count
        let stripes = self.stripes
        let pageCount = pages.count
        DispatchQueue.concurrentPerform(iterations: count) { index in
            do {
                let protection = tracker.map {
                    StripeProtection(tracker: $0, stripes: stripes, stream: index, pageCount: pageCount)
                }
                let result = try streamers[index].send(pages: pages, round: round, protection: protection,
                                                       progress: index == 0 ? progress.map { report in { report($0 * count) } } : nil)
                if index > 0 {
                    try connections[index].send(StreamRoundEnd(round: round, batches: UInt64(result.batches), pages: UInt64(result.pages)))
                }
                outcomes.set(index, .success(result))
            } catch {
                outcomes.set(index, .failure(error))
            }
        }
        return try outcomes.combined()
    }

    var wireBytes: UInt64 { streamers.reduce(0) { $0 + $1.wireBytes } }

    var counts: EncodingCounts {
        var total = EncodingCounts()
        for streamer in streamers { total.add(streamer.counts) }
        return total
    }

    func digest() -> UInt64 { hashTable.digest() }

    func closeExtraStreams() {
        for connection in connections.dropFirst() { connection.close() }
    }
}

/// Round 0 with a deferred tracker: write-protects one stream's blocks (`PageStripes`, 512
/// pages each: page p is in block p / 512, on stream (p / 512) % N) in order, each just before
/// the stream reads the block's first page.
///
/// Why no write is lost: a block is protected, then read. A write that completes before the
/// protection is seen by the read (the read comes after it); a write that completes after the
/// protection is recorded and reported by the harvest that ends round 0 (or a later one). Each
/// block is read by its stream after its protection returned, and no page is protected twice.
/// Blocks with no page to send in `pages` are protected too (when the stream passes them, and
/// the rest when it finishes), so at the end of round 0 every page of the region is protected,
/// whatever bitmap round 0 got. (Today round 0 sends every page.)
///
/// Used by one stream thread; the tracker's `protect(pages:)` is thread-safe, and streams
/// protect disjoint blocks.
final class StripeProtection {
    let tracker: any DirtyTracker
    let stripes: PageStripes
    let stream: Int
    let pageCount: Int
    /// The next block of this stream not yet protected (a block index, not a page).
    private var nextBlock: Int

    init(tracker: any DirtyTracker, stripes: PageStripes, stream: Int, pageCount: Int) {
        self.tracker = tracker
        self.stripes = stripes
        self.stream = stream
        self.pageCount = pageCount
        nextBlock = stream
    }

    /// Protects this stream's blocks up to and including the one holding `page` (which must be
    /// on this stream); returns the first page after that block: pages below it are protected.
    func protectBlocks(through page: Int) throws -> Int {
        let block = page / PageStripes.pagesPerStripe
        precondition(stripes.stream(of: page) == stream, "page \(page) is not on stream \(stream)")
        while nextBlock <= block { try protectNextBlock() }
        return min((block + 1) * PageStripes.pagesPerStripe, pageCount)
    }

    /// Protects every block of this stream not protected yet.
    func protectRemainingBlocks() throws {
        while nextBlock * PageStripes.pagesPerStripe < pageCount { try protectNextBlock() }
    }

    private func protectNextBlock() throws {
        let first = nextBlock * PageStripes.pagesPerStripe
        try tracker.protect(pages: first..<min(first + PageStripes.pagesPerStripe, pageCount))
        nextBlock += stripes.streamCount
    }
}

/// Per-stream results of one round, filled from worker threads.
private final class StreamOutcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<StreamRoundResult, any Error>?]

    init(count: Int) { results = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ result: Result<StreamRoundResult, any Error>) {
        lock.lock()
        results[index] = result
        lock.unlock()
    }

    /// The sum of all streams, or the first stream's error.
    func combined() throws -> StreamRoundResult {
        lock.lock()
        defer { lock.unlock() }
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
