import FerryControl
import FerryHostModel
import Foundation
import Logging

/// A scale-in that consolidates: `GroupPlan.consolidation` says which members to live-migrate
/// (each through `GuestMover`, which waits for its turn at the limit of moves per host) and which
/// to remove; the moves run first, all at once, then the removals. Each move that ends on its
/// destination is noted on the group's timeline ("moved to consolidate: NAME from h2 to h1,
/// emptying host h2"), as its journal says it ("moving to h1 from h2 (group G: moved to
/// consolidate, emptying host h2)"). A move that fails leaves the guest where it was (the mover
/// sees to it) and the scale-in removes the members the policy's order took instead.
extension GroupScaler {
    /// The plan's scale-in, with consolidation when there is a mover.
    func scaleIn(_ plan: GroupPlan, _ group: ScalingGroup, members: [CloudGuest], load: [GuestID: Double]) async {
        let cause = "group \(group.name): scale in to \(group.desired)"
        guard let consolidation = await consolidation(plan, group, members: members, load: load) else {
            for member in plan.scaleIn { remove(member, cause: cause) }
            return
        }
        let byID = Dictionary(uniqueKeysWithValues: members.map { ($0.id.hex, $0) })
        let victims = consolidation.remove.compactMap { byID[$0] }
        let emptied =
            consolidation.emptied.isEmpty ? "" : " (host \(consolidation.emptied.joined(separator: ", ")) emptied)"
        guard !consolidation.moves.isEmpty else {
            for member in victims { remove(member, cause: cause + emptied) }
            return
        }
        let moved = consolidation.moves.compactMap { byID[$0.member]?.id }
        let involved = Set(victims.map(\.id) + moved + plan.scaleIn.map(\.id))
        guard consolidating.withLock({ $0.insert(group.id).inserted }) else { return }
        let taken = busy.withLock { busy in
            let free = involved.subtracting(busy)
            busy.formUnion(free)
            return free
        }
        logger.info(
            "scaling group consolidates before its scale-in",
            metadata: [
                "group.id": "\(group.id)", "group.moves": "\(consolidation.moves)",
                "group.removes": "\(victims.map(\.name.value))", "group.emptied": "\(consolidation.emptied)",
            ])
        Task {
            defer {
                busy.withLock { $0.subtract(taken) }
                _ = consolidating.withLock { $0.remove(group.id) }
            }
            let failed = await move(consolidation.moves, group, byID: byID)
            if failed.isEmpty {
                await removeAll(victims, cause: cause + emptied)
            } else {
                let reason = failed.joined(separator: "; ")
                logger.warning(
                    "a move to consolidate failed; the scale-in follows the policy's order: \(reason)",
                    metadata: ["group.id": "\(group.id)"])
                try? await store.noteScalingAction(
                    group: group.id, reason: "a move to consolidate failed (\(reason)): scale in in the policy's order")
                await removeAll(plan.scaleIn, cause: cause)
            }
        }
    }

    /// `GroupPlan.consolidation` from the store's hosts and their usage now; nil without a mover
    /// or when the store does not answer (the scale-in then follows the policy's order).
    private func consolidation(_ plan: GroupPlan, _ group: ScalingGroup, members: [CloudGuest], load: [GuestID: Double])
        async -> ScaleInPlan?
    {
        guard mover != nil else { return nil }
        do {
            let hosts = try await store.hosts()
            let usage = try await store.hostUsage()
            return GroupPlan.consolidation(
                plan, group: group, members: members, load: load, busy: busy.withLock { $0 }, hosts: hosts,
                usage: usage, now: clock(), heartbeatTimeout: heartbeatTimeout)
        } catch {
            report(group, "no consolidation before the scale-in: \(error)")
            return nil
        }
    }

    /// The moves, all at once; what failed, in words (empty: all ended on their destination).
    private func move(_ moves: [ConsolidationMove], _ group: ScalingGroup, byID: [String: CloudGuest]) async
        -> [String]
    {
        guard let mover else { return ["no mover"] }
        return await withTaskGroup(of: String?.self) { tasks in
            for move in moves {
                guard let member = byID[move.member] else { continue }
                let name = member.name.value
                tasks.addTask { [store] in
                    do {
                        _ = try await mover.move(
                            member.id, to: move.to,
                            cause: "group \(group.name): moved to consolidate, emptying host \(move.from)")
                        try? await store.noteScalingAction(
                            group: group.id,
                            reason: "moved to consolidate: \(name) from \(move.from) to \(move.to), emptying host"
                                + " \(move.from)")
                        return nil
                    } catch {
                        return "\(name) from \(move.from) to \(move.to): \(error)"
                    }
                }
            }
            var failed: [String] = []
            for await failure in tasks { if let failure { failed.append(failure) } }
            return failed
        }
    }

    /// Removes the members (each as the store has it now), all at once.
    private func removeAll(_ members: [CloudGuest], cause: String) async {
        await withTaskGroup(of: Void.self) { tasks in
            for member in members {
                tasks.addTask { [store] in
                    let now = (try? await store.guest(id: member.id)) ?? member
                    await self.removeNow(now, cause: cause)
                }
            }
        }
    }
}
