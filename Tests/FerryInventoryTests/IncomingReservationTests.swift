import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryInventory

/// `reserveIncoming` and `removeFailedArrival`: the destination's side of a live migration,
/// checked in the transaction that consumes the capacity.
@Suite struct IncomingReservationTests {
    let capacity = IncomingCapacity(vcpus: 2, memoryBytes: 3 << 20)

    @Test func anArrivalIsInsertedMigratingInAndJournaled() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let id = GuestID.random()
        let record = try inventory.reserveIncoming(try specification("web"), id: id, capacity: capacity, cause: "in m1")
        #expect(record.state == .migratingIn && record.id == id && record.process == nil)
        #expect(try inventory.journal(of: id, latest: 5).map(\.cause) == ["in m1"])
        // A live arrival ends running or paused (a paused source); a cold one is registered
        // stopped or suspended; none starts or is defined anew.
        #expect(GuestState.migratingIn.allows(.paused) && GuestState.migratingIn.allows(.running))
        #expect(GuestState.migratingIn.allows(.stopped) && GuestState.migratingIn.allows(.suspended))
        #expect(!GuestState.migratingIn.allows(.starting) && !GuestState.migratingIn.allows(.defined))
    }

    @Test func aNameOrAnIDThatExistsIsRefused() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let id = GuestID.random()
        _ = try inventory.create(try specification("web"), id: id, cause: "create")
        let byName = inventoryError { () throws(InventoryError) in
            try inventory.reserveIncoming(try! specification("web"), id: .random(), capacity: capacity, cause: "in")
        }
        #expect(byName?.code == .alreadyExists && byName?.message.contains("web") == true)
        let byID = inventoryError { () throws(InventoryError) in
            try inventory.reserveIncoming(try! specification("other"), id: id, capacity: capacity, cause: "in")
        }
        #expect(byID?.code == .alreadyExists)
        #expect(try inventory.guests().map(\.name.value) == ["web"])
    }

    @Test func capacityCountsTheGuestsWithAProcess() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        // 1 MiB each: a defined guest holds nothing, a migrating-in one holds its memory.
        _ = try inventory.create(try specification("idle"), id: .random(), cause: "create")
        _ = try inventory.reserveIncoming(try specification("a"), id: .random(), capacity: capacity, cause: "in")
        _ = try inventory.reserveIncoming(try specification("b"), id: .random(), capacity: capacity, cause: "in")
        _ = try inventory.reserveIncoming(try specification("c"), id: .random(), capacity: capacity, cause: "in")
        let full = inventoryError { () throws(InventoryError) in
            try inventory.reserveIncoming(try! specification("d"), id: .random(), capacity: capacity, cause: "in")
        }
        #expect(
            full?.code == .insufficientCapacity && full?.message.contains("memory") == true,
            "\(String(describing: full))")
        var wide = try specification("wide")
        wide.vcpus = 3
        let cpus = inventoryError { () throws(InventoryError) in
            try inventory.reserveIncoming(wide, id: .random(), capacity: capacity, cause: "in")
        }
        #expect(cpus?.code == .insufficientCapacity && cpus?.message.contains("vCPUs") == true)
        #expect(try inventory.guests().count == 4)
    }

    @Test func onlyAnArrivalLeavesAsAFailedArrival() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let id = GuestID.random()
        _ = try inventory.reserveIncoming(try specification("web"), id: id, capacity: capacity, cause: "in")
        _ = try inventory.create(try specification("db"), id: .random(), cause: "create")
        let refused = inventoryError { () throws(InventoryError) in
            try inventory.removeFailedArrival(guestName("db"), cause: "no")
        }
        #expect(refused?.code == .notRemovable)
        let entry = try inventory.removeFailedArrival(guestName("web"), cause: "incoming migration m1 failed")
        #expect(entry.to == nil && entry.from == .migratingIn && entry.cause == "incoming migration m1 failed")
        #expect(try inventory.guest(id: id) == nil)
    }
}
