import FerryHostModel
import GRDB

extension SQLiteInventory {
    public func apply(_ plan: ReconciliationPlan) throws(InventoryError) -> ReconciliationOutcome {
        var outcome = ReconciliationOutcome()
        for change in plan.changes {
            do {
                try writing("reconcile guest \(change.name) in") { db in try self.applyChange(db, change) }
                outcome.applied.append(change.name)
            } catch  where error.code == .stale || error.code == .notFound || error.code == .transitionRefused {
                outcome.refused.append(error)
            }
        }
        for registration in plan.registrations {
            let process = registration.process
            do {
                _ = try writing("register guest \(process.name) in") { db in
                    try self.insertNew(
                        db, id: process.id, specification: process.specification, state: registration.state,
                        process: process.facts, cause: registration.cause)
                }
                outcome.registered.append(process.name)
            } catch  where error.code == .alreadyExists {
                outcome.refused.append(error)
            }
        }
        for note in plan.leftAlone { logger.notice("reconciliation left alone: \(note)") }
        if !plan.isEmpty {
            logger.info(
                "reconciled",
                metadata: [
                    "reconcile.applied": "\(outcome.applied.count)",
                    "reconcile.registered": "\(outcome.registered.count)",
                    "reconcile.refused": "\(outcome.refused.count)",
                ])
        }
        return outcome
    }

    private func applyChange(_ db: Database, _ change: GuestChange) throws {
        guard var record = try fetch(db, name: change.name), record.id == change.id else {
            throw InventoryError(
                .notFound, "guest \(change.name) (ID \(change.id)) left the inventory since the plan was made")
        }
        guard record.generation == change.generation else {
            throw InventoryError(
                .stale,
                "guest \(change.name) is at generation \(record.generation), the plan saw \(change.generation):"
                    + " it changed since; reconcile again")
        }
        let now = GuestRow.now()
        for step in change.steps {
            switch step {
            case .transition(let from, let to, let cause):
                guard record.state == from else {
                    throw InventoryError(
                        .stale, "guest \(change.name) is \(record.state.rawValue), the plan expected \(from.rawValue)")
                }
                record = try changeState(db, record, to: to, cause: cause, at: now)
            case .recordProcess(let facts):
                record = try update(db, record, at: now) { $0.process = facts }
            case .markMissingDisks(let disks):
                record = try update(db, record, at: now) { $0.missingDisks = disks }
                logger.warning(
                    "guest disks missing", metadata: ["guest.name": "\(change.name)", "guest.disks": "\(disks)"])
            case .removeAfterHandoff(let cause):
                guard record.state == .migratingOut else {
                    throw InventoryError(.stale, "guest \(change.name) is \(record.state.rawValue), not migrating-out")
                }
                _ = try deleteRow(db, record, cause: cause)
                return
            }
        }
    }
}
