import FerryControl
import FerryHostModel
import Foundation
import Logging

/// Carrying out a pass's moves: in the plan's order, each a live migration through `GuestMover`
/// to the host the plan chose. Out of one host at most as many at once as the drain's cost model
/// would run for those guests (`HostDrainer.plan`: one until a migration out of the host has
/// measured the link, then as many as make the moves end soonest, up to `--max-moves-per-host`,
/// which `GuestMover` holds in any case); a move onto a host that is the source of a move under
/// way waits for that one (its room was counted free). A move that fails leaves its guest where
/// the mover says (on one host: `GuestMover` settles an unclear end from the agents) and is
/// reported with the reason; its journal entry starts the guest's cool-down. A move whose source
/// or destination stopped taking part since the pass looked (an agent gone silent) is not begun:
/// `skipped`, with the reason.
extension ClusterBalancer {
    func carryOut(_ number: Int, _ plan: BalancePlan, guests: [String: CloudGuest], loads: [String: Double]) async {
        let limits = concurrency(plan, guests: guests)
        update(number) { $0.concurrency = limits.values.max() ?? 1 }
        await withTaskGroup(of: (index: Int, source: String).self) { group in
            var inFlight: [String: Int] = [:]
            for (index, move) in plan.moves.enumerated() {
                while (inFlight[move.from] ?? 0) >= (limits[move.from] ?? 1) || (inFlight[move.to] ?? 0) > 0 {
                    guard let ended = await group.next() else { break }
                    inFlight[ended.source, default: 1] -= 1
                }
                guard let guest = guests[move.guest] else { continue }
                inFlight[move.from, default: 0] += 1
                let sharing = inFlight[move.from] ?? 1
                let cause = BalanceInputs.cause(
                    host: move.from, load: loads[move.from] ?? 0, threshold: settings.threshold)
                update(number) { $0.moves[index].state = .moving }
                group.addTask {
                    await self.moveOne(number, index, guest, move, cause: cause, sharing: sharing)
                    return (index, move.from)
                }
            }
            for await _ in group {}
        }
    }

    /// Moves at once out of each source host, as the drain's cost model would run its guests.
    func concurrency(_ plan: BalancePlan, guests: [String: CloudGuest]) -> [String: Int] {
        var leaving: [String: [CloudGuest]] = [:]
        for move in plan.moves { if let guest = guests[move.guest] { leaving[move.from, default: []].append(guest) } }
        return leaving.mapValues { max(1, drainer.plan($0[0].host, $0).0.concurrency) }
    }

    /// One move; its outcome goes to the pass's report, its measurements to the cost model.
    nonisolated func moveOne(
        _ number: Int, _ index: Int, _ guest: CloudGuest, _ move: BalanceMove, cause: String, sharing: Int
    ) async {
        if let why = await unfit(move) {
            await update(number) { report in
                report.moves[index].state = .skipped
                report.moves[index].reason = why
            }
            return
        }
        let started = ContinuousClock.now
        var downtime: Double?
        var reason: String?
        do {
            downtime =
                try await drainer.moveMeasured(guest.id, from: move.from, to: move.to, cause: cause, sharing: sharing)
                .downtimeMs
        } catch {
            reason = error.message
            logger.warning(
                "a balancing move failed",
                metadata: [
                    "guest.id": "\(guest.id)", "guest.host": "\(move.from)", "guest.moving_to": "\(move.to)",
                    "guest.error": "\(error.message)",
                ])
        }
        let seconds = HostDrainer.seconds(ContinuousClock.now - started)
        let (failure, downtimeMs) = (reason, downtime)
        await update(number) { report in
            report.moves[index].state = failure == nil ? .moved : .failed
            report.moves[index].seconds = seconds
            report.moves[index].downtimeMs = downtimeMs
            report.moves[index].reason = failure
        }
    }

    /// Why the move cannot begin now: its source or destination no longer takes part (silent,
    /// draining, drained, failing) since the pass looked; nil when both do (or the store did not
    /// answer: the mover then decides).
    nonisolated func unfit(_ move: BalanceMove) async -> String? {
        guard let hosts = try? await store.hosts() else { return nil }
        let now = Date()
        for id in [move.from, move.to] {
            guard let host = hosts.first(where: { $0.id == id }),
                host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout)
            else {
                return "not begun: host \(id) no longer takes guests (silent, draining, drained or failing) since"
                    + " the pass looked"
            }
        }
        return nil
    }
}
