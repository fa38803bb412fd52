import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryInventory

@Suite struct SQLiteInventoryTests {
    @Test func createTransitionAndJournal() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let id = GuestID.random()
        let created = try inventory.create(try specification("web-1"), id: id, cause: "api: create")
        #expect(created.state == .defined && created.generation == 1 && created.process == nil)
        #expect(try inventory.guest(named: guestName("web-1")) == created)
        #expect(try inventory.guest(id: id) == created)

        let starting = try inventory.transition(guestName("web-1"), from: .defined, to: .starting, cause: "api: start")
        let running = try inventory.transition(
            guestName("web-1"), from: .starting, to: .running, cause: "process answered", generation: 2)
        #expect(starting.generation == 2 && running.generation == 3 && running.state == .running)
        #expect(running.stateSince >= created.stateSince)
        #expect(try inventory.guest(named: guestName("web-1")) == running)

        let journal = try inventory.journal(of: id, latest: 10)
        #expect(journal.map(\.from) == [nil, .defined, .starting])
        #expect(journal.map(\.to) == [.defined, .starting, .running])
        #expect(journal.map(\.cause) == ["api: create", "api: start", "process answered"])
        #expect(journal.allSatisfy { $0.guestID == id && $0.guestName.value == "web-1" })
        #expect(try inventory.journal(of: id, latest: 2).map(\.to) == [.starting, .running])
        try expectJournalAgreesWithState(inventory)
    }

    @Test func refusedTransitionNamesFromToAndGuestAndChangesNothing() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        _ = try inventory.create(try specification("db"), id: .random(), cause: "create")
        let error = inventoryError { () throws(InventoryError) in
            try inventory.transition(guestName("db"), from: .defined, to: .running, cause: "skip starting")
        }
        #expect(error?.code == .transitionRefused)
        #expect(error?.message.contains("guest db cannot go from defined to running") == true)
        #expect(error?.message.contains("migrating-in, starting") == true)
        #expect(try inventory.guest(named: guestName("db"))?.state == .defined)
        #expect(try inventory.guest(named: guestName("db"))?.generation == 1)
        #expect(try inventory.journal(latest: 10).count == 1)
        let missing = inventoryError { () throws(InventoryError) in
            try inventory.transition(guestName("nobody"), from: .defined, to: .starting, cause: "x")
        }
        #expect(missing?.code == .notFound)
    }

    @Test func staleExpectationIsRefused() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        _ = try inventory.create(try specification("web"), id: .random(), cause: "create")
        _ = try inventory.transition(guestName("web"), from: .defined, to: .starting, cause: "start")
        // Someone read `defined` before the start: the state no longer matches.
        let byState = inventoryError { () throws(InventoryError) in
            try inventory.transition(guestName("web"), from: .defined, to: .migratingIn, cause: "incoming")
        }
        #expect(byState?.code == .stale)
        #expect(byState?.message.contains("guest web is starting, not defined") == true)
        // The same state, but a change in between (process facts) moved the generation on.
        _ = try inventory.recordProcess(
            guestName("web"), ProcessFacts(pid: 10, startTime: 20, controlSocket: "/run/web.sock"), generation: 2)
        let byGeneration = inventoryError { () throws(InventoryError) in
            try inventory.transition(guestName("web"), from: .starting, to: .running, cause: "up", generation: 2)
        }
        #expect(byGeneration?.code == .stale)
        #expect(byGeneration?.message.contains("generation 3, not 2") == true)
        #expect(try inventory.guest(named: guestName("web"))?.state == .starting)
        try expectJournalAgreesWithState(inventory)
    }

    @Test func processFactsAreRecordedAndClearedWhenTheProcessEnds() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        _ = try inventory.create(try specification("web"), id: .random(), cause: "create")
        _ = try inventory.transition(guestName("web"), from: .defined, to: .starting, cause: "start")
        let facts = ProcessFacts(pid: 4242, startTime: UInt64(Int64.max) + 5, controlSocket: "/var/lib/ferry/web.sock")
        let recorded = try inventory.recordProcess(guestName("web"), facts, generation: nil)
        #expect(recorded.process == facts && recorded.generation == 3)
        #expect(try inventory.guest(named: guestName("web"))?.process == facts)
        _ = try inventory.transition(guestName("web"), from: .starting, to: .running, cause: "up")
        #expect(try inventory.guest(named: guestName("web"))?.process == facts)
        _ = try inventory.transition(guestName("web"), from: .running, to: .stopping, cause: "stop")
        let stopped = try inventory.transition(guestName("web"), from: .stopping, to: .stopped, cause: "exited")
        #expect(stopped.process == nil)
        #expect(try inventory.guest(named: guestName("web"))?.process == nil)
    }

    @Test func removalRules() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let id = GuestID.random()
        _ = try inventory.create(try specification("web"), id: id, cause: "create")
        for (from, to) in [(GuestState.defined, GuestState.starting), (.starting, .running)] {
            _ = try inventory.transition(guestName("web"), from: from, to: to, cause: "test")
        }
        let running = inventoryError { () throws(InventoryError) in
            try inventory.remove(guestName("web"), cause: "delete")
        }
        #expect(running?.code == .notRemovable)
        #expect(running?.message.contains("guest web is running") == true)
        let notMigrating = inventoryError { () throws(InventoryError) in
            try inventory.removeAfterHandoff(guestName("web"), cause: "handoff", generation: nil)
        }
        #expect(notMigrating?.code == .notRemovable)

        _ = try inventory.transition(guestName("web"), from: .running, to: .migratingOut, cause: "migrate to b")
        let migrating = inventoryError { () throws(InventoryError) in
            try inventory.remove(guestName("web"), cause: "delete")
        }
        #expect(migrating?.code == .notRemovable)
        #expect(migrating?.message.contains("handoff removes it") == true)
        let staleHandoff = inventoryError { () throws(InventoryError) in
            try inventory.removeAfterHandoff(guestName("web"), cause: "handoff", generation: 1)
        }
        #expect(staleHandoff?.code == .stale)
        let left = try inventory.removeAfterHandoff(guestName("web"), cause: "handed off to host-b", generation: 4)
        #expect(left.from == .migratingOut && left.to == nil && left.toText == "removed")
        #expect(try inventory.guest(named: guestName("web")) == nil)

        // A name can be used again; a stopped (removable) guest is removed with `remove`.
        _ = try inventory.create(try specification("web"), id: .random(), cause: "create again")
        let removed = try inventory.remove(guestName("web"), cause: "api: delete")
        #expect(removed.from == .defined && removed.to == nil)
        #expect(try inventory.guests().isEmpty)
        #expect(try inventory.journal(named: guestName("web"), latest: 10).count == 7)
        #expect(try inventory.journal(of: id, latest: 10).last?.cause == "handed off to host-b")
        try expectJournalAgreesWithState(inventory)
    }

    @Test func duplicatesAndInvalidSpecificationsAreRefused() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let id = GuestID.random()
        _ = try inventory.create(try specification("web"), id: id, cause: "create")
        let sameName = inventoryError { () throws(InventoryError) in
            try inventory.create(try! specification("web"), id: .random(), cause: "create")
        }
        #expect(sameName?.code == .alreadyExists)
        let sameID = inventoryError { () throws(InventoryError) in
            try inventory.create(try! specification("other"), id: id, cause: "create")
        }
        #expect(sameID?.code == .alreadyExists)
        var bad = try specification("bad")
        bad.memoryBytes = 12345
        let invalid = inventoryError { () throws(InventoryError) in
            try inventory.create(bad, id: .random(), cause: "create")
        }
        #expect(invalid?.code == .invalidSpecification)
        #expect(invalid?.message.contains("memory_bytes") == true)
        #expect(try inventory.guests().map(\.name.value) == ["web"])
    }

    @Test func reopenedInventoryKeepsEverything() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        var inventory: SQLiteInventory? = try SQLiteInventory(path: path)
        var spec = try specification("kvm-1", disks: ["root", "data"])
        spec.kind = .kvm
        spec.memoryBytes = 4 << 20  // a KVM guest's least
        spec.mac = "02:00:00:00:00:07"
        spec.cpuLimitPercent = 50
        _ = try inventory!.create(spec, id: .random(), cause: "create")
        _ = try inventory!.create(try specification("b"), id: .random(), cause: "create")
        _ = try inventory!.transition(guestName("kvm-1"), from: .defined, to: .starting, cause: "start")
        _ = try inventory!.recordProcess(
            guestName("kvm-1"), ProcessFacts(pid: 7, startTime: 99, controlSocket: "/s"), generation: nil)
        _ = try inventory!.remove(guestName("b"), cause: "delete")
        let guests = try inventory!.guests()
        let journal = try inventory!.journal(latest: 100)
        try inventory!.close()
        inventory = nil

        let reopened = try SQLiteInventory(path: path)
        #expect(try reopened.guests() == guests)
        #expect(try reopened.journal(latest: 100) == journal)
        #expect(try reopened.guest(named: guestName("kvm-1"))?.specification == spec)
        // The sequence goes on after the last row, also after a removal.
        _ = try reopened.transition(guestName("kvm-1"), from: .starting, to: .running, cause: "up")
        #expect(try reopened.journal(latest: 1).first?.sequence == journal.last!.sequence + 1)
        try expectJournalAgreesWithState(reopened)
    }

    @Test func journalQueriesReturnTheLatestOldestFirst() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let a = GuestID.random()
        _ = try inventory.create(try specification("a"), id: a, cause: "create a")
        _ = try inventory.create(try specification("b"), id: .random(), cause: "create b")
        var state = GuestState.defined
        for next in [GuestState.starting, .running, .paused, .running, .paused] {
            _ = try inventory.transition(guestName("a"), from: state, to: next, cause: "to \(next.rawValue)")
            state = next
        }
        #expect(try inventory.journal(of: a, latest: 3).map(\.cause) == ["to paused", "to running", "to paused"])
        #expect(try inventory.journal(named: guestName("b"), latest: 3).map(\.cause) == ["create b"])
        #expect(try inventory.journal(latest: 2).map(\.cause) == ["to running", "to paused"])
        #expect(try inventory.journal(latest: 0).isEmpty)
        #expect(try inventory.journal(latest: 100).count == 7)
    }
}
