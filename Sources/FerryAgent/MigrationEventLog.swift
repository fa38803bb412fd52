import FerrySystem

/// One event of a migration's stream: `id` counts from 1 in the order events happened, so a
/// client that reconnects with `Last-Event-ID: N` gets exactly the events after N.
public struct MigrationEvent: Sendable, Equatable {
    public enum Name: String, Sendable, CaseIterable {
        /// `status` or `phase` changed. Data: `{"status", "phase"}`.
        case phase
        /// A round ended. Data: the migration's figures at that moment (the round's own).
        case round
        /// New figures while a round is sent (a few times a second). Data: the migration.
        case progress
        /// The migration ended; the stream closes after it. Data: the final migration.
        case end
    }

    public var id: UInt64
    public var name: Name
    /// One line of JSON.
    public var data: String

    public var serverSentEvent: ServerSentEvent {
        ServerSentEvent(event: name.rawValue, data: data, id: String(id))
    }

    /// The event as `text/event-stream` carries it.
    public var eventStreamText: String { serverSentEvent.text }

    /// An event read back from a stream; nil if it is not one of ours.
    public init?(_ event: ServerSentEvent) {
        guard let text = event.id, let id = UInt64(text), let name = Name(rawValue: event.event) else { return nil }
        self.init(id: id, name: name, data: event.data)
    }

    public init(id: UInt64, name: Name, data: String) {
        self.id = id
        self.name = name
        self.data = data
    }
}

/// A migration's events in order, kept (the last `capacity`) for clients that resume, and handed
/// to every live subscriber as they are appended. Appending never blocks on a subscriber: each
/// gets an `AsyncStream` with an unbounded buffer, fed under the log's lock so order holds.
public final class MigrationEventLog: @unchecked Sendable {
    public let capacity: Int
    private let condition = MonotonicCondition()
    // Guarded by `condition`:
    private var events: [MigrationEvent] = []
    private var nextID: UInt64 = 1
    private var ended = false
    private var subscribers: [Int: AsyncStream<MigrationEvent>.Continuation] = [:]
    private var nextSubscriber = 0

    public init(capacity: Int = 10_000) { self.capacity = capacity }

    /// Adds an event; `end` also closes every stream. Nothing is added after `end`.
    @discardableResult
    func append(_ name: MigrationEvent.Name, data: String) -> MigrationEvent? {
        // Finishing a stream runs its `onTermination`, which takes the lock: outside it.
        let (event, finished) = condition.withLock {
            () -> (MigrationEvent?, [AsyncStream<MigrationEvent>.Continuation]) in
            guard !ended else { return (nil, []) }
            let event = MigrationEvent(id: nextID, name: name, data: data)
            nextID += 1
            events.append(event)
            if events.count > capacity { events.removeFirst(events.count - capacity) }
            for continuation in subscribers.values { continuation.yield(event) }
            var finished: [AsyncStream<MigrationEvent>.Continuation] = []
            if name == .end {
                ended = true
                finished = Array(subscribers.values)
                subscribers = [:]
            }
            condition.broadcast()
            return (event, finished)
        }
        for continuation in finished { continuation.finish() }
        return event
    }

    /// Events with an id above `lastEventID` (all kept ones for nil). When `lastEventID` is older
    /// than the oldest kept event, the stream starts at the oldest kept: the ids show the gap.
    public func snapshot(after lastEventID: UInt64? = nil) -> [MigrationEvent] {
        condition.withLock { events.filter { $0.id > (lastEventID ?? 0) } }
    }

    /// The events after `lastEventID`, then every new one, ending after `end`.
    public func stream(after lastEventID: UInt64? = nil) -> AsyncStream<MigrationEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: MigrationEvent.self)
        condition.withLock {
            for event in events where event.id > (lastEventID ?? 0) { continuation.yield(event) }
            if ended {
                continuation.finish()
                return
            }
            let key = nextSubscriber
            nextSubscriber += 1
            subscribers[key] = continuation
            continuation.onTermination = { [weak self] _ in
                guard let self else { return }
                _ = self.condition.withLock { self.subscribers.removeValue(forKey: key) }
            }
        }
        return stream
    }

    /// Blocks (at most `timeoutMs`) until an event after `lastEventID` exists or the log ended;
    /// returns those events (empty on timeout or when the log ended with none after it).
    public func wait(after lastEventID: UInt64, timeoutMs: Int) -> [MigrationEvent] {
        let deadline = MonotonicClock.deadline(afterMilliseconds: timeoutMs)
        return condition.withLock {
            while events.last.map({ $0.id <= lastEventID }) ?? true, !ended {
                if !condition.wait(untilNanoseconds: deadline) { break }
            }
            return events.filter { $0.id > lastEventID }
        }
    }

    public var hasEnded: Bool { condition.withLock { ended } }
}
