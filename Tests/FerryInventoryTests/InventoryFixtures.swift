import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryInventory

/// A guest specification for tests: the built-in kind, 1 MiB, one disk.
func specification(_ name: String, disks: [String] = ["root"]) throws -> GuestSpecification {
    GuestSpecification(
        name: try GuestName(name), kind: .builtin, memoryBytes: 1 << 20,
        disks: disks.map { DiskSpecification(name: $0, sizeBytes: 1 << 20) })
}

func guestName(_ text: String) -> GuestName { try! GuestName(text) }

/// Runs `body` and returns the InventoryError it threw (nil if it threw none).
func inventoryError<T>(_ body: () throws(InventoryError) -> T) -> InventoryError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

/// The journal and the guests table never disagree: every guest's latest journal row ends in its
/// state, each guest's rows form a chain (each `from` is the previous `to`, the first from nil),
/// and a guest whose last row is a removal has no row.
func expectJournalAgreesWithState(_ inventory: SQLiteInventory, sourceLocation: SourceLocation = #_sourceLocation)
    throws
{
    let journal = try inventory.journal(latest: Int.max)
    let guests = Dictionary(uniqueKeysWithValues: try inventory.guests().map { ($0.id, $0) })
    var last: [GuestID: JournalEntry] = [:]
    for entry in journal {
        #expect(
            entry.from == last[entry.guestID]?.to, "journal row \(entry.sequence) breaks the chain",
            sourceLocation: sourceLocation)
        last[entry.guestID] = entry
    }
    for (id, entry) in last {
        #expect(
            guests[id]?.state == entry.to, "guest \(entry.guestName): table and journal disagree",
            sourceLocation: sourceLocation)
    }
    #expect(
        Set(guests.keys).isSubset(of: Set(last.keys)), "a guest without a journal row", sourceLocation: sourceLocation)
    #expect(zip(journal, journal.dropFirst()).allSatisfy { $0.sequence < $1.sequence }, sourceLocation: sourceLocation)
}
