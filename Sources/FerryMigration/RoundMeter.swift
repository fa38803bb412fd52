import FerrySystem
import Synchronization

/// The source's live figures for the round being sent. The stream threads add what each batch
/// put on the wire (`sent`), as they write it; whichever finds a progress value due (at most every
/// `interval`) hands one to the handler. The session thread starts and ends each round (`begin`,
/// `end`), which also gives the round's sending time for its send rate (`SendRate`).
final class RoundMeter: Sendable {
    /// What a round's live values carry besides its counters.
    struct Round: Sendable {
        var round: Int
        var pagesInRound: Int
        /// Wire bytes of the migration before this round.
        var wireBefore: UInt64
        var dirtyPagesPerSecond: Double
        var predictedDowntimeSeconds: Double?
        /// The convergence model after the previous round (none in round 0).
        var model: ProgressETA.Model?
        /// Rounds the policy may send after this one.
        var roundsLeft: Int
    }

    /// What `end` measured.
    struct Sent {
        var pages: Int
        var wireBytes: UInt64
        var sendingSeconds: Double
    }

    /// Nanoseconds between live values.
    static let interval: UInt64 = 250_000_000

    private struct State {
        var round: Round?
        var roundStart: UInt64 = 0
        var sampledAt: UInt64 = 0
        var sampledBytes: UInt64 = 0
        var window = SendRateWindow()
    }

    let handler: ProgressHandler?
    let migrationStart: UInt64
    let pageCount: Int
    let pageSize: Int
    private let pages = Atomic<Int>(0)
    private let bytes = Atomic<UInt64>(0)
    private let nextDue = Atomic<UInt64>(UInt64.max)
    private let state = Mutex(State())

    init(handler: ProgressHandler?, migrationStart: UInt64, pageCount: Int, pageSize: Int) {
        self.handler = handler
        self.migrationStart = migrationStart
        self.pageCount = pageCount
        self.pageSize = pageSize
    }

    /// A round starts sending now (session thread, no stream sending).
    func begin(_ round: Round) {
        let now = MonotonicClock.now()
        pages.store(0, ordering: .relaxed)
        bytes.store(0, ordering: .relaxed)
        state.withLock { state in
            state.round = round
            state.roundStart = now
            state.sampledAt = now
            state.sampledBytes = 0
        }
        nextDue.store(handler == nil ? UInt64.max : now &+ Self.interval, ordering: .releasing)
    }

    /// A stream wrote a batch of `pages` pages in `bytes` wire bytes (any stream thread).
    func sent(pages: Int, bytes: Int) {
        self.pages.wrappingAdd(pages, ordering: .relaxed)
        self.bytes.wrappingAdd(UInt64(bytes), ordering: .relaxed)
        let now = MonotonicClock.now()
        guard now >= nextDue.load(ordering: .acquiring), let handler else { return }
        // One thread reports (under the lock: never two values at once); the others carry on.
        _ = state.withLockIfAvailable { state in
            guard now >= nextDue.load(ordering: .acquiring) else { return }
            nextDue.store(now &+ Self.interval, ordering: .releasing)
            sample(&state, now: now)
            if let value = live(state, now: now) { handler(value) }
        }
    }

    /// The round's sending ended (session thread, after every stream returned): what it sent, and
    /// in how long.
    func end() -> Sent {
        let now = MonotonicClock.now()
        nextDue.store(UInt64.max, ordering: .releasing)
        return state.withLock { state in
            sample(&state, now: now)
            return Sent(
                pages: pages.load(ordering: .relaxed), wireBytes: bytes.load(ordering: .relaxed),
                sendingSeconds: Double(now &- state.roundStart) / 1e9)
        }
    }

    /// Adds the sending since the last sample to the rate window.
    private func sample(_ state: inout State, now: UInt64) {
        let total = bytes.load(ordering: .relaxed)
        state.window.add(bytes: total &- state.sampledBytes, seconds: Double(now &- state.sampledAt) / 1e9)
        state.sampledAt = now
        state.sampledBytes = total
    }

    private func live(_ state: State, now: UInt64) -> MigrationProgress? {
        guard let round = state.round else { return nil }
        let sentPages = min(pages.load(ordering: .relaxed), round.pagesInRound)
        let roundBytes = bytes.load(ordering: .relaxed)
        let sending = Double(now &- state.roundStart) / 1e9
        let roundLeft = ProgressETA.round(
            pagesSent: sentPages, pagesInRound: round.pagesInRound, sendingSeconds: sending)
        let migrationLeft = round.model.flatMap { model in
            roundLeft.flatMap {
                ProgressETA.migration(
                    roundSecondsLeft: $0, roundSeconds: sending + $0, roundsLeft: round.roundsLeft, model: model)
            }
        }
        return MigrationProgress(
            role: .source, kind: .live, round: round.round, pagesSent: sentPages, pagesInRound: round.pagesInRound,
            pageCount: pageCount, pageSize: pageSize, roundWireBytes: roundBytes,
            wireBytes: round.wireBefore &+ roundBytes, elapsedSeconds: Double(now &- migrationStart) / 1e9,
            sendBytesPerSecond: state.window.bytesPerSecond, dirtyPagesPerSecond: round.dirtyPagesPerSecond,
            predictedDowntimeSeconds: round.predictedDowntimeSeconds, roundETASeconds: roundLeft,
            migrationETASeconds: migrationLeft)
    }
}
