import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Synchronization

/// The rounds each extra page stream of the destination has finished, and their failures: the
/// control connection waits here before it acknowledges a round or verifies the image.
final class StreamRounds: @unchecked Sendable {
    // All state is guarded by `condition`.
    private let condition = MonotonicCondition()
    private var lastFinished: [Int64]
    private var failure: (stream: Int, error: any Error)?

    /// `streams` counts the extra streams (stream 1 is index 0 here).
    init(streams: Int) {
        lastFinished = Array(repeating: -1, count: streams)
    }

    /// The first stream failure, if any, wrapped as a `MigrationError`.
    var firstFailure: MigrationError? {
        condition.withLock {
            failure.map { MigrationError.wrap($0.error, during: "page stream \($0.stream)", guest: .notHere) }
        }
    }

    func finished(stream: Int, round: UInt32) {
        condition.withLock {
            lastFinished[stream - 1] = Int64(round)
            condition.broadcast()
        }
    }

    func failed(stream: Int, error: any Error) {
        condition.withLock {
            if failure == nil { failure = (stream, error) }
            condition.broadcast()
        }
    }

    /// Returns when every extra stream has finished `round`; throws the first stream failure, or
    /// after `timeout` seconds.
    func wait(round: UInt32, timeout: Double) throws {
        let deadline = MonotonicClock.deadline(afterSeconds: timeout)
        try condition.withLock {
            while true {
                if let failure {
                    throw MigrationError.wrap(failure.error, during: "page stream \(failure.stream)", guest: .notHere)
                }
                if lastFinished.allSatisfy({ $0 >= Int64(round) }) { return }
                if !condition.wait(untilNanoseconds: deadline) {
                    let late = lastFinished.enumerated().filter { $0.element < Int64(round) }.map {
                        String($0.offset + 1)
                    }
                    throw MigrationError(
                        .transport,
                        "page stream(s) \(late.joined(separator: ", ")) did not finish round \(round) within \(Int(timeout)) s",
                        guest: .notHere)
                }
            }
        }
    }
}

/// Receives one extra page stream on its own thread: applies its batches and reports its round
/// markers until the connection closes.
final class StreamReceiver: @unchecked Sendable {
    let stream: Int
    let connection: FramedConnection
    let sink: PageSink
    private let rounds: StreamRounds
    private let done = DispatchSemaphore(value: 0)
    /// Whether `stop` was called (a receive failure after it is expected, not reported).
    private let stopRequested = Mutex(false)

    init(stream: Int, connection: FramedConnection, sink: PageSink, rounds: StreamRounds) {
        self.stream = stream
        self.connection = connection
        self.sink = sink
        self.rounds = rounds
    }

    func start() {
        let thread = Thread { [self] in
            run()
            done.signal()
        }
        thread.name = "ferry-stream-\(stream)"
        thread.start()
    }

    private func run() {
        do {
            while true {
                let frame: ReceivedFrame
                switch try connection.receive(direct: .pageBatch) {
                case .direct(_, _, let length):
                    _ = try sink.receive(batchLength: length, from: connection)
                    continue
                case .frame(let whole):
                    frame = whole
                }
                switch frame.type {
                case .streamRoundEnd:
                    let end = try StreamRoundEnd(payload: frame.payload)
                    rounds.finished(stream: stream, round: end.round)
                default:
                    throw MigrationError(
                        .protocolViolation, "unexpected \(frame.type) frame on page stream \(stream)", guest: .notHere)
                }
            }
        } catch {
            if !stopRequested.withLock({ $0 }) { rounds.failed(stream: stream, error: error) }
        }
    }

    /// Closes the stream and waits for its thread. Idempotent.
    func stop() {
        let first = stopRequested.withLock { requested in
            defer { requested = true }
            return !requested
        }
        guard first else { return }
        connection.close()
        done.wait()
    }
}
