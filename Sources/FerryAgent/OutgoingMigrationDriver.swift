import FerrySystem
import FerryVMM
import Foundation
import Logging

/// Drives one outgoing live migration of a guest through its `ferry vmm`'s control socket, as
/// the source agent does: `start()` opens a `watch` connection and sends `migrate`; a thread of
/// its own follows the vmm's events, keeps the API's `MigrationResource` current and appends the
/// migration's events (`phase`, `round`, `progress`, `end`) to `events`. The outcome
/// (completed, failed, cancelled, unresolved) is recorded once and never changes.
///
/// Every call here blocks (on Unix sockets, for milliseconds): from async code, use `OffPool`.
public final class OutgoingMigrationDriver: @unchecked Sendable {
    public let id: String
    public let socketPath: String
    public let options: MigrationOptions
    public let events: MigrationEventLog
    let logger: Logger
    /// Called once with the final resource (on the driver's thread, or the caller's of `start`
    /// when it fails): where the agent records the outcome in its inventory and metrics.
    let onEnd: (@Sendable (MigrationResource) -> Void)?
    /// How long the watch connection waits for an event before the driver checks that the vmm
    /// still answers (a blackout or a slow round may be silent for a while).
    static let watchTimeoutSeconds = 5.0
    let condition = MonotonicCondition()
    // Guarded by `condition`:
    var resource: MigrationResource
    var sawMigratingOut = false

    /// `destination`: the destination vmm's migration address (HOST:PORT); `peer`: the
    /// destination agent, for the resource.
    public init(
        id: String = OutgoingMigrationDriver.newID(), guest: String, socketPath: String, destination: String,
        peer: String? = nil, options: MigrationOptions = MigrationOptions(), events: MigrationEventLog = .init(),
        logger: Logger = Logger(label: "ferry.agent.migration"),
        onEnd: (@Sendable (MigrationResource) -> Void)? = nil
    ) {
        self.onEnd = onEnd
        self.id = id
        self.socketPath = socketPath
        self.options = options
        self.events = events
        self.logger = logger
        resource = MigrationResource(id: id, guest: guest, direction: .out, peer: peer, destination: destination)
    }

    /// 32 hex digits.
    public static func newID() -> String {
        (0..<4).map { _ in String(format: "%08x", UInt32.random(in: .min ... .max)) }.joined()
    }

    /// The migration as the API returns it now.
    public var current: MigrationResource { condition.withLock { resource } }

    /// Starts watching and sends `migrate`; returns once the vmm accepted (or throws what it
    /// said: the resource is then `failed` with the guest on the source). The following runs on
    /// a thread of the driver's own.
    public func start() throws(MigrationDriverError) {
        let watch: VMMControlClient
        do {
            watch = try VMMControlClient(path: socketPath, timeoutSeconds: Self.watchTimeoutSeconds)
            _ = try watch.call("watch")
        } catch {
            let failure = MigrationDriverError.vmm(error, doing: "watching the guest's ferry vmm at \(socketPath)")
            finish(.failed, location: "source", error: failure.message)
            throw failure
        }
        let destination = condition.withLock { resource.destination }
        do {
            try VMMControlClient(path: socketPath).call("migrate", options.controlFields(to: destination))
        } catch {
            watch.close()
            let failure = MigrationDriverError.vmm(error, doing: "asking the guest's ferry vmm to migrate")
            finish(.failed, location: "source", error: failure.message)
            throw failure
        }
        logger.info(
            "migration started",
            metadata: ["migration.id": "\(id)", "migration.destination": "\(destination)"])
        let thread = Thread { [self] in follow(watch) }
        thread.name = "ferry-agent-migration"
        thread.start()
    }

    /// Takes up a migration the vmm already runs (after the agent restarted): watches it and
    /// follows it to its end as `start` would, without sending `migrate`. A vmm that no longer
    /// answers makes the outcome `unresolved`.
    public func attach(startedAt: Date) {
        condition.withLock {
            resource.startedAt = startedAt
            sawMigratingOut = true
        }
        guard let watch = try? VMMControlClient(path: socketPath, timeoutSeconds: Self.watchTimeoutSeconds),
            let state = try? watch.call("watch")["state"]?.stringValue
        else { return vanished() }
        if let snapshot = try? VMMControlClient(path: socketPath, timeoutSeconds: 5).call("migration"),
            let migration = snapshot["migration"], migration != .null
        {
            absorb(migration, emit: true)
        }
        applyState(state, reason: nil)
        let thread = Thread { [self] in follow(watch) }
        thread.name = "ferry-agent-migration"
        thread.start()
    }

    /// Asks the vmm to cancel (ABORT; the guest stays on the source). Returns whether the vmm
    /// took it (false: it was being cancelled already, or ended meanwhile and the outcome is on
    /// its way); the outcome follows in the events. Throws `.ended` once the outcome is recorded,
    /// `.tooLate` when the source passed its last point of cancel (COMMIT is written): the status
    /// is then left as it was.
    @discardableResult
    public func cancel() throws(MigrationDriverError) -> Bool {
        if let final = condition.withLock({ resource.status.isFinal ? resource.status : nil }) {
            throw MigrationDriverError(.ended, "migration \(id) already ended (\(final.rawValue)); nothing to cancel")
        }
        let accepted: Bool
        do {
            accepted = try VMMControlClient(path: socketPath).call("cancel-migration")["cancelling"]?.boolValue ?? false
        } catch  where error.code == .refused && error.message.hasPrefix("cancel-migration: too_late") {
            throw MigrationDriverError(
                .tooLate,
                "migration \(id) is past its last point of cancel: the source wrote COMMIT and the guest belongs to"
                    + " the destination; too late to cancel, the migration completes (GET /v1/migrations/\(id))",
                cause: error)
        } catch  where error.code == .refused {
            accepted = false  // it ended meanwhile: the outcome is on its way
        } catch {
            throw MigrationDriverError.vmm(error, doing: "asking the guest's ferry vmm to cancel")
        }
        if accepted {
            condition.withLock {
                if !resource.status.isFinal && resource.status != .cancelling { change(status: .cancelling) }
            }
        }
        return accepted
    }

    /// Waits (at most `timeoutSeconds`) for the outcome; nil if it is not there yet.
    public func waitUntilEnded(timeoutSeconds: Double) -> MigrationResource? {
        let deadline = MonotonicClock.deadline(afterSeconds: timeoutSeconds)
        return condition.withLock {
            while !resource.status.isFinal { if !condition.wait(untilNanoseconds: deadline) { break } }
            return resource.status.isFinal ? resource : nil
        }
    }

    public var hasEnded: Bool { condition.withLock { resource.status.isFinal } }
}
