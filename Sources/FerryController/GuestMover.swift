import FerryAgent
import FerryControl
import FerryHostModel
import FerryTransport
import Foundation
import Logging
import Synchronization

/// Moves a running guest to another host by live migration, through the agents' API (signed with
/// the cluster key): the store records the move first (`beginMove`: the guest holds its
/// resources on both hosts), the source's agent migrates it (`POST /v1/migrations`, followed
/// until it ends or the move's deadline cancels it), and the store records where it ended
/// (`finishMove`, or `abandonMove`: it stays). When the outcome is not known (the source's agent
/// stops answering) the agents' inventories decide (`settle`); a controller that restarts settles
/// the moves it finds begun (`resume`). The guest is recorded on one host at every moment, its
/// row never lost: nothing here deletes or changes its state.
///
/// At most `maxMovesPerHost` moves run in or out of one host at once (counted in the store, so
/// across controllers): a move the controller chooses (`move`: a lease's delivery, a group's
/// consolidation) waits for its turn, up to the move timeout; one asked through the API
/// (`begin`) is refused (`moveLimit`, HTTP 409).
final class GuestMover: Sendable {
    let store: any ControlStore
    let key: SharedKey
    let work: BlockingWork
    /// How long a migration may take before it is cancelled (and, after a restart, how long the
    /// agents are asked where an unsettled guest is).
    let timeout: Duration
    /// How long a cold migration may take before it is cancelled (a cancel is honoured until the
    /// destination registers the guest).
    let coldTimeout: Duration
    /// Moves in or out of one host at once (nil: no limit).
    let maxMovesPerHost: Int?
    let logger: Logger
    /// The source's record of each guest's last completed migration, for the cost model
    /// (`takeMeasurement`; the oldest are dropped past 1,024).
    private let measurements = Mutex<[GuestID: MigrationResource]>([:])
    /// Why each guest's last migration failed with the guest on its source, as its agent said
    /// (`takeFailure`; dropped past 1,024): a move that never began or ended unclearly has none.
    private let failures = Mutex<[GuestID: String]>([:])

    init(
        store: any ControlStore, key: SharedKey, work: BlockingWork, timeout: Duration, maxMovesPerHost: Int? = 2,
        coldTimeout: Duration = .seconds(1800), logger: Logger
    ) {
        self.coldTimeout = coldTimeout
        self.store = store
        self.key = key
        self.work = work
        self.timeout = timeout
        self.maxMovesPerHost = maxMovesPerHost
        self.logger = logger
    }

    /// Moves the guest to `host` (nil: the host the scheduler picks among the others) and returns
    /// it on its new host; throws, with the source's reason, when it stays where it was. A host at
    /// the limit of moves makes it wait (every 250 ms, up to the move timeout).
    func move(
        _ id: GuestID, to host: String?, cause: String = "api: migrate", options: MigrationRequest.Options? = nil
    ) async throws(ControlError) -> CloudGuest {
        _ = takeFailure(id)
        return try await carryOut(try await beginInTurn(id, to: host, cause: cause), options: options)
    }

    /// Records the move (refused unless the guest runs, is not moving, the host takes it, and
    /// neither host has `maxMovesPerHost` moves under way).
    func begin(_ id: GuestID, to host: String?, cause: String = "api: migrate", kind: MoveKind = .live)
        async throws(ControlError) -> CloudGuest
    {
        try await store.beginMove(
            id, to: host, cause: cause, generation: nil, maxMovesPerHost: maxMovesPerHost, kind: kind)
    }

    /// `begin`, again while a host is at the limit of moves, until the move timeout has passed.
    func beginInTurn(_ id: GuestID, to host: String?, cause: String, kind: MoveKind = .live) async throws(ControlError)
        -> CloudGuest
    {
        let deadline = ContinuousClock.now + timeout
        var waited = false
        while true {
            do {
                return try await begin(id, to: host, cause: cause, kind: kind)
            } catch {
                guard error.code == .moveLimit, ContinuousClock.now < deadline else { throw error }
                if !waited {
                    logger.notice(
                        "a move waits for its turn: \(error.message)", metadata: ["guest.id": "\(id)"])
                    waited = true
                }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// Migrates the guest `begin` recorded moving (with the agents' migration `options`) and
    /// records the outcome.
    func carryOut(_ moving: CloudGuest, options: MigrationRequest.Options? = nil, kind: MoveKind = .live)
        async throws(ControlError) -> CloudGuest
    {
        guard let destination = moving.movingTo else { return moving }
        let end: MoveEnd
        do { end = try await migrate(moving, to: destination, options: options, kind: kind) } catch {
            end = .unknown("\(error)")
        }
        switch end {
        case .completed(let migration):
            measurements.withLock { measurements in
                if measurements.count >= 1024 { measurements.removeAll() }
                measurements[moving.id] = migration
            }
            return try await finish(moving, cause: "host \(moving.host): \(Self.summary(migration))")
        case .failed(let reason):
            failures.withLock { failures in
                if failures.count >= 1024 { failures.removeAll() }
                failures[moving.id] = reason
            }
            logger.warning(
                "a guest's \(kind.rawValue) migration failed; it stays on its host",
                metadata: ["guest.id": "\(moving.id)", "guest.host": "\(moving.host)", "guest.error": "\(reason)"])
            do { _ = try await store.abandonMove(moving.id, cause: "host \(moving.host): \(reason)") } catch {
                if error.code != .stale { Task { await self.settleEventually(moving) } }
                throw error
            }
            throw ControlError(
                .database,
                "guest \(moving.id) stays on host \(moving.host): its \(kind.rawValue) migration to host \(destination)"
                    + " failed: \(reason)")
        case .unknown(let reason):
            if let settled = await settle(moving) {
                if settled.host == destination { return settled }
                throw ControlError(
                    .database,
                    "guest \(moving.id) stays on host \(moving.host): its move to host \(destination) ended"
                        + " without it (\(reason))")
            }
            Task { await self.settleEventually(moving) }
            throw ControlError(
                .database,
                "the move of guest \(moving.id) from host \(moving.host) to host \(destination) did not end clearly"
                    + " (\(reason)); the agents' inventories decide where it is")
        }
    }

    /// Why the guest's last migration failed on its agents, once: nil when it did not run (no
    /// host could take it, a host at its limit) or ended unclearly (the agents' inventories decide).
    func takeFailure(_ id: GuestID) -> String? {
        failures.withLock { $0.removeValue(forKey: id) }
    }

    /// Moves the guest cold (`MoveKind.cold`, docs/cold-migration.md) to `host` (nil: the
    /// scheduler's pick), a running or a stopped guest, as `move` does a live one: the same
    /// recorded begin, follow and end, the cold move's deadline (`coldTimeout`).
    func moveCold(_ id: GuestID, to host: String?, cause: String, options: MigrationRequest.Options? = nil)
        async throws(ControlError) -> CloudGuest
    {
        _ = takeFailure(id)
        let moving = try await beginInTurn(id, to: host, cause: cause, kind: .cold)
        return try await carryOut(moving, options: options, kind: .cold)
    }

    /// What the guest's last completed migration measured, once.
    func takeMeasurement(_ id: GuestID) -> MigrationResource? {
        measurements.withLock { $0.removeValue(forKey: id) }
    }

    /// finishMove; a move another controller (or a settle) already finished is taken as it is. A
    /// store that failed leaves the move to be settled again from the agents.
    private func finish(_ moving: CloudGuest, cause: String) async throws(ControlError) -> CloudGuest {
        do {
            return try await store.finishMove(moving.id, cause: cause)
        } catch {
            guard error.code == .stale else {
                Task { await self.settleEventually(moving) }
                throw error
            }
            guard let now = try await store.guest(id: moving.id), now.host == moving.movingTo else { throw error }
            return now
        }
    }

    /// How a migration ended, as the source's agent told it.
    enum MoveEnd {
        case completed(MigrationResource)
        /// It never began, failed or was cancelled: the guest runs on its source.
        case failed(String)
        /// Nobody said: the source stopped answering, or the migration outlived its deadline and
        /// the cancel's grace.
        case unknown(String)
    }

    /// Asks the source's agent to migrate the guest to the destination's agent (live, or cold) and
    /// follows the migration until it ends; past the deadline (`timeout`, `coldTimeout`) it asks
    /// for a cancel and waits `cancelGrace` more.
    private func migrate(
        _ guest: CloudGuest, to destination: String, options: MigrationRequest.Options?, kind: MoveKind
    ) async throws -> MoveEnd {
        let source = try await agent(guest.host)
        let target = try await agent(destination)
        let request = MigrationRequest(
            guest: GuestProvisioner.hostName(guest.id).value, to: "http://\(target.endpoint)",
            kind: kind == .cold ? "cold" : nil, options: options)
        let body = Array(try JSONEncoder().encode(request))
        var started = try await work.run { try source.send("POST", "/v1/migrations", body: body) }
        // The end of an earlier migration (a live one a cold move follows) releases the guest just
        // after it is recorded: the agent answers `busy` meanwhile.
        let busyUntil = ContinuousClock.now + .seconds(5)
        while started.status == 409, String(decoding: started.body, as: UTF8.self).contains("busy"),
            ContinuousClock.now < busyUntil
        {
            try await Task.sleep(for: .milliseconds(100))
            started = try await work.run { try source.send("POST", "/v1/migrations", body: body) }
        }
        guard started.status == 201 else {
            return .failed(Self.said(source, started))
        }
        var migration = try Self.migration(started.body)
        logger.info(
            "a guest's \(kind.rawValue) migration began",
            metadata: [
                "guest.id": "\(guest.id)", "guest.host": "\(guest.host)", "guest.moving_to": "\(destination)",
                "migration.id": "\(migration.id)",
            ])
        let limit = kind == .cold ? coldTimeout : timeout
        var deadline = ContinuousClock.now + limit
        var cancelled = false
        var lastFailure = ""
        while true {
            switch migration.status {
            case .completed:
                return .completed(migration)
            case .failed, .cancelled:
                return .failed("migration \(migration.id) \(migration.status.rawValue): \(migration.error ?? "-")")
            case .setup, .active, .cancelling, .unresolved:
                break
            }
            if ContinuousClock.now >= deadline {
                guard !cancelled else {
                    return .unknown("migration \(migration.id) still \(migration.status.rawValue) \(lastFailure)")
                }
                await cancel(source, migration.id, guest)
                cancelled = true
                deadline = ContinuousClock.now + Self.cancelGrace(limit)
            }
            try await Task.sleep(for: .milliseconds(200))
            let id = migration.id
            do {
                migration = try await work.run {
                    try Self.migration(try source.checked(source.send("GET", "/v1/migrations/\(id)")).body)
                }
                lastFailure = ""
            } catch {
                lastFailure = "(the source's agent: \(error))"  // a pause of the agent: asked again
            }
        }
    }

    /// How long a cancelled migration has to end before nobody can say how it ended: the move's
    /// timeout, from 5 s to a minute.
    static func cancelGrace(_ timeout: Duration) -> Duration { min(.seconds(60), max(.seconds(5), timeout)) }

    /// Asks the source for a cancel; one too late (the guest is the destination's) is fine.
    private func cancel(_ source: AgentClient, _ id: String, _ guest: CloudGuest) async {
        logger.warning(
            "a guest's live migration outlived the move's deadline: cancelling it",
            metadata: ["guest.id": "\(guest.id)", "migration.id": "\(id)"])
        _ = try? await work.run { try source.send("DELETE", "/v1/migrations/\(id)") }
    }

    static func migration(_ body: [UInt8]) throws -> MigrationResource {
        try MigrationResource.decode(String(decoding: body, as: UTF8.self))
    }

    static func summary(_ migration: MigrationResource) -> String {
        let total = migration.totalTimeMs.map { String(format: "%.0f ms", $0) } ?? "?"
        guard migration.kind == "cold" else {
            let downtime = migration.downtimeMs.map { String(format: "%.1f ms", $0) } ?? "?"
            return "migration \(migration.id) completed in \(total), downtime \(downtime)"
        }
        let interruption = migration.interruptionMs.map { String(format: ", interruption %.0f ms", $0) } ?? ""
        let problem = migration.error.map { "; \($0)" } ?? ""
        return "cold migration \(migration.id) completed in \(total)\(interruption)\(problem)"
    }

    /// The agent's refusal, as it said it.
    static func said(_ client: AgentClient, _ response: AgentResponse) -> String {
        do {
            _ = try client.checked(response)
            return "HTTP \(response.status)"
        } catch {
            return error.message
        }
    }

    /// A client for the host's agent, at the address of its last heartbeat.
    func agent(_ host: String) async throws -> AgentClient {
        guard let record = try await store.hosts().first(where: { $0.id == host }) else {
            throw ControlError(.notFound, "host \(host) is not registered")
        }
        return try AgentClient(url: record.address, key: key, timeoutMs: 30_000)
    }
}
