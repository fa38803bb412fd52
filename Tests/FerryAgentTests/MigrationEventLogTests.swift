import Foundation
import Testing

@testable import FerryAgent

/// The log's `end` finishes every live stream; finishing one runs its termination handler,
/// which takes the log's lock: `append` must not hold it then (it once deadlocked the agent's
/// migration driver as soon as a client followed the event stream).
@Suite struct MigrationEventLogTests {
    @Test func theEndFinishesALiveStreamWithoutDeadlocking() async throws {
        let log = MigrationEventLog()
        let stream = log.stream()
        let ended = DispatchSemaphore(value: 0)
        let thread = Thread {
            log.append(.phase, data: "{}")
            log.append(.end, data: "{}")
            ended.signal()
        }
        thread.start()
        let finished = try await OffPool.run { ended.wait(timeout: .now() + 10) == .success }
        #expect(finished, "append(.end) did not return: it deadlocked on the log's lock")
        guard finished else { return }  // the stream would never finish either
        var names: [MigrationEvent.Name] = []
        for await event in stream { names.append(event.name) }
        #expect(names == [.phase, .end])
        #expect(log.hasEnded)
    }
}
