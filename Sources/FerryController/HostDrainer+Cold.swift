import FerryAgent
import FerryControl
import FerryHostModel
import Foundation

/// The drain's cold fallback: a guest whose live migration failed on the agents (it did not
/// converge within the move's deadline and was cancelled, the source or the destination refused
/// it, the engine gave up) runs on its host still; its policy decides what comes next.
/// `live_then_cold`: a cold move (`GuestMover.moveCold`: shut down, its files moved, started on
/// the other host), journaled "drain: cold fallback after …". `live_only`: it stays, failed, the
/// reason saying so. A guest no host can take (room, KVM) is not tried cold: a cold move needs
/// the same room and the same kind of host.
extension HostDrainer {
    enum ColdOutcome {
        case moved
        case movedCold
        case failed
    }

    /// After the live migration failed with `failure` (the agent's reason; `entry.reason` holds
    /// the whole message): the cold move if the guest's policy, as the store has it now, allows it.
    func fallBack(
        _ guest: CloudGuest, failure: String, options: MigrationRequest.Options?, into entry: inout DrainReport.Guest
    ) async -> ColdOutcome {
        let live = entry.reason ?? failure
        let policy: MigrationPolicy
        do {
            policy = try await store.guest(id: guest.id)?.migrationPolicy ?? guest.migrationPolicy
        } catch {
            entry.reason = "\(live); its policy could not be read (\(error.message)): no cold move was tried"
            return .failed
        }
        guard policy == .liveThenCold else {
            entry.reason = "\(live); policy live_only forbids a cold move"
            return .failed
        }
        logger.notice(
            "a guest that could not go live moves cold, as its policy allows",
            metadata: ["guest.id": "\(guest.id)", "guest.host": "\(guest.host)", "guest.error": "\(failure)"])
        entry.reason = nil
        let outcome = await moveCold(
            guest, cause: "drain: cold fallback after \(failure)", options: options, into: &entry)
        if outcome == .movedCold {
            entry.reason = "live: \(failure)"
        } else {
            entry.reason = "\(live); then its cold move failed: \(entry.reason ?? "?")"
        }
        return outcome
    }

    /// The guest's cold move; the report's entry gets where it went and the interruption, or why
    /// it stays.
    func moveCold(
        _ guest: CloudGuest, cause: String, options: MigrationRequest.Options?, into entry: inout DrainReport.Guest
    ) async -> ColdOutcome {
        do {
            let moved = try await mover.moveCold(guest.id, to: nil, cause: cause, options: options)
            entry.to = moved.host
            if let migration = mover.takeMeasurement(guest.id) {
                entry.downtimeMs = migration.interruptionMs
                if let problem = migration.error { entry.reason = problem }
            }
            return .movedCold
        } catch {
            entry.reason = error.message
            logger.warning(
                "a guest of a draining host could not move cold: it stays",
                metadata: ["guest.id": "\(guest.id)", "guest.host": "\(guest.host)", "guest.error": "\(error.message)"])
            return .failed
        }
    }
}
