import FerryAgent
import FerryControl
import FerryHostModel
import Foundation
import Logging

/// A drain's loop: look at the host's guests, plan the ones still to go (`DrainPlan`), start as
/// many migrations as the plan runs at once, wait for one to end, and again; when nothing is left
/// to move, the host is `drained` (or the drain `incomplete`, naming what stays). Each migration
/// runs in its own task, so an undrain stops new ones without cutting one under way.
extension HostDrainer {
    /// What one look at the host decided.
    struct Step {
        /// Guests to start moving now, with their predicted seconds.
        var start: [(CloudGuest, Double)]
        var concurrency: Int
        /// Guests that may become movable (building, moving by someone else, unknown): look again.
        var unsettled: Bool
    }

    func run(_ host: String) async {
        let (ended, continuation) = AsyncStream.makeStream(of: Void.self)
        var outcomes = ended.makeAsyncIterator()
        var inFlight = 0
        while !Task.isCancelled {
            let step: Step
            do {
                guard let next = try await look(host) else { break }
                step = next
            } catch {
                logger.warning("a drain could not look at its host: \(error)", metadata: ["host.id": "\(host)"])
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            for (guest, estimate) in step.start.prefix(max(0, step.concurrency - inFlight)) {
                begin(guest, estimate: estimate, host: host, concurrency: step.concurrency)
                inFlight += 1
                Task { [self] in
                    await self.moveOne(guest, host: host, sharing: step.concurrency)
                    continuation.yield()
                }
            }
            if inFlight == 0 {
                guard step.unsettled else {
                    await finish(host)
                    return
                }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            guard await outcomes.next() != nil else { break }
            inFlight -= 1
        }
        logger.notice("a drain stopped before its end", metadata: ["host.id": "\(host)"])
    }

    /// The host's guests now: who moves next, who stays and why. Nil when the host is no longer
    /// `draining` (undrained, here or by another controller).
    func look(_ host: String) async throws(ControlError) -> Step? {
        guard let record = try await store.hosts().first(where: { $0.id == host }), record.mode == .draining else {
            return nil
        }
        let holding = Set(CloudGuestState.allCases.filter(\.holdsCapacity))
        let guests = try await store.guests(host: host, states: holding)
        let (busy, failed) = drains.withLock { drains in
            (
                Set((drains[host]?.report.moving ?? []).map(\.id)),
                Set((drains[host]?.report.failed ?? []).map(\.id))
            )
        }
        let free = { (guest: CloudGuest) in
            guest.movingTo == nil && !busy.contains(guest.id.description) && !failed.contains(guest.id.description)
        }
        let movable = guests.filter { $0.state == .running && free($0) }
        // A stopped guest whose policy allows it moves cold (and stays stopped there).
        let cold = guests.filter { $0.state == .stopped && $0.migrationPolicy == .liveThenCold && free($0) }
        let stays = guests.filter { [.stopped, .suspended].contains($0.state) && !cold.contains($0) }
        let unsettled = guests.contains { guest in
            !busy.contains(guest.id.description) && !failed.contains(guest.id.description)
                && !stays.contains(guest) && !movable.contains(guest) && !cold.contains(guest)
        }
        let stuck = guests.filter {
            !busy.contains($0.id.description) && !failed.contains($0.id.description) && !stays.contains($0)
        }
        if Date().timeIntervalSince(record.lastHeartbeat) > Self.seconds(heartbeatTimeout), !stuck.isEmpty {
            let silent = Int(Date().timeIntervalSince(record.lastHeartbeat).rounded())
            let reason =
                "host \(host)'s agent is silent (last heard \(silent) s ago): its guests cannot move live until it is"
                + " back; drain it again then"
            drains.withLock { drains in
                drains[host]?.report.waiting = []
                drains[host]?.report.failed += stuck.map {
                    DrainReport.Guest(id: $0.id.description, name: $0.name.value, reason: reason)
                }
            }
            return Step(start: [], concurrency: 1, unsettled: false)
        }
        let (plan, assumed) = self.plan(host, movable)
        let byID = Dictionary(uniqueKeysWithValues: movable.map { ($0.id.description, $0) })
        let ordered = plan.order.compactMap { byID[$0] }
        let start = ordered.map { ($0, plan.estimates[$0.id.description] ?? 0) } + cold.map { ($0, 0.0) }
        note(host, plan: plan, assumed: assumed, waiting: start, stays: stays)
        return Step(start: start, concurrency: plan.concurrency, unsettled: unsettled)
    }

    /// The report as one look left it: the model, the guests waiting and those that stay.
    private func note(
        _ host: String, plan: DrainPlan, assumed: Double?, waiting: [(CloudGuest, Double)], stays: [CloudGuest]
    ) {
        let model = model(host)
        drains.withLock { drains in
            drains[host]?.report.concurrency = plan.concurrency
            drains[host]?.report.linkBytesPerSecond = model.linkBytesPerSecond
            drains[host]?.report.setupSeconds = model.setupSeconds
            drains[host]?.report.streamBytesPerSecond = model.streamBytesPerSecond
            drains[host]?.report.wireRatio = model.wireRatio
            drains[host]?.report.assumedDirtyBytesPerSecond = assumed
            drains[host]?.report.waiting = waiting.map { guest, estimate in
                DrainReport.Guest(id: guest.id.description, name: guest.name.value, estimateSeconds: estimate)
            }
            drains[host]?.report.stays = stays.map {
                let allowed = $0.state == .stopped ? " (its policy live_only forbids a cold move)" : ""
                return DrainReport.Guest(
                    id: $0.id.description, name: $0.name.value,
                    reason:
                        "\($0.state.rawValue): only a running guest moves live\(allowed); its files stay on the host")
            }
        }
    }

    /// The plan for the guests still to go. Their dirty rates are what their last migrations
    /// measured; a guest never measured counts at the median of those that were. Until one
    /// migration out of the host has measured anything, one goes at a time (a probe: a wrong
    /// guess at many at once would cost more than one migration alone); after it, no more at once
    /// than the downtimes measured so far allow (`downtimeBound`).
    func plan(_ host: String, _ guests: [CloudGuest]) -> (DrainPlan, assumed: Double?) {
        let rates = dirtyRates.withLock { $0 }
        let known = guests.compactMap { rates[$0.id] }
        let fallback = MigrationCostModel.median(known.isEmpty ? Array(rates.values) : known)
        let probing = fallback == nil && measured.withLock { ($0[host] ?? []).isEmpty }
        let profiles = guests.map { guest in
            DrainGuest(
                id: guest.id.description,
                profile: MigrationProfile(
                    memoryBytes: Int64(guest.resources.memoryBytes),
                    dirtyBytesPerSecond: rates[guest.id] ?? fallback ?? 0))
        }
        if let forcedConcurrency {
            let plan = DrainPlan.make(
                profiles, model: model(host), maxConcurrency: forcedConcurrency, forced: forcedConcurrency)
            return (plan, fallback)
        }
        let model = model(host)
        let limit = probing ? 1 : downtimeBound(host, model: model)
        return (DrainPlan.make(profiles, model: model, maxConcurrency: limit), fallback)
    }

    /// Marks the guest moving in the report.
    func begin(_ guest: CloudGuest, estimate: Double, host: String, concurrency: Int) {
        drains.withLock { drains in
            drains[host]?.report.concurrencies.append(concurrency)
            let id = guest.id.description
            drains[host]?.report.waiting.removeAll { $0.id == id }
            drains[host]?.report.moving.append(
                DrainReport.Guest(id: id, name: guest.name.value, estimateSeconds: estimate))
            drains[host]?.movingSince[id] = .now
        }
    }

    /// One guest's move, to the host the scheduler picks: a running guest's live migration (its
    /// measurements go to the cost model), then, if it failed on the agents, a cold one as the
    /// guest's policy allows (`fallBack`); a stopped guest's cold move. Its end goes to the report.
    func moveOne(_ guest: CloudGuest, host: String, sharing: Int) async {
        let started = ContinuousClock.now
        let id = guest.id.description
        var entry = DrainReport.Guest(id: id, name: guest.name.value)
        var outcome = ColdOutcome.failed
        let options = drains.withLock { $0[host]?.options }
        if guest.state == .stopped {
            outcome = await moveCold(
                guest, cause: "drain of host \(host): stopped, moved cold", options: options, into: &entry)
        } else {
            do {
                let moved = try await moveMeasured(
                    guest.id, from: host, to: nil, cause: "drain of host \(host)", options: options, sharing: sharing)
                entry.to = moved.guest.host
                entry.downtimeMs = moved.downtimeMs
                outcome = .moved
            } catch {
                entry.reason = error.message
                logger.warning(
                    "a guest of a draining host could not move live",
                    metadata: ["host.id": "\(host)", "guest.id": "\(id)", "guest.error": "\(error.message)"])
                if let failure = mover.takeFailure(guest.id) {
                    outcome = await fallBack(guest, failure: failure, options: options, into: &entry)
                }
            }
        }
        entry.seconds = Self.seconds(ContinuousClock.now - started)
        drains.withLock { drains in
            entry.estimateSeconds = drains[host]?.report.moving.first { $0.id == id }?.estimateSeconds
            drains[host]?.report.moving.removeAll { $0.id == id }
            drains[host]?.movingSince[id] = nil
            switch outcome {
            case .moved: drains[host]?.report.moved.append(entry)
            case .movedCold:
                drains[host]?.report.movedCold.append(entry)
                drains[host]?.report.coldDowntimeMs += entry.downtimeMs ?? 0
            case .failed: drains[host]?.report.failed.append(entry)
            }
        }
    }

    /// Nothing left to move: `drained` when nothing holds capacity on the host any more, else
    /// `incomplete`.
    func finish(_ host: String) async {
        let left = drains.withLock { drains in
            (drains[host]?.report.failed.count ?? 0) + (drains[host]?.report.stays.count ?? 0)
        }
        var phase = DrainReport.Phase.incomplete
        if left == 0 {
            do {
                _ = try await store.setHostMode(host, to: .drained, from: [.draining], cause: "drain: every guest left")
                phase = .drained
            } catch {
                logger.notice(
                    "a drain ended on a host that changed meanwhile: \(error)", metadata: ["host.id": "\(host)"])
                phase = .stopped
            }
        }
        let summary = drains.withLock { drains -> String in
            drains[host]?.report.phase = phase
            drains[host]?.report.endedAt = CloudViews.time(Date())
            drains[host]?.report.etaSeconds = 0
            drains[host]?.task = nil
            return drains[host]?.report.summary ?? host
        }
        logger.notice("a drain ended: \(summary)", metadata: ["host.id": "\(host)"])
    }
}
