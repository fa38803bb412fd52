import FerryHostModel
import FerryInventory
import Foundation
import Logging
import Testing

@testable import FerryAgent

/// One operation per guest: an operation waits for the agent's own crash check (which runs a
/// moment after a suspend or a stop answered, when the vmm closes its control connection)
/// instead of answering `busy`; it is refused at once while a real operation runs.
@Suite struct GuestClaimTests {
    static func guests() throws -> (HostGuests, String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "ferry-claim-\(UUID().uuidString)"
        ).path
        for sub in ["guests", "disks"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
        let inventory = try SQLiteInventory(path: "\(directory)/inventory.sqlite")
        let files = GuestFiles(guestsDirectory: "\(directory)/guests", disksDirectory: "\(directory)/disks")
        return (HostGuests(inventory: inventory, files: files, logger: Logger(label: "test")), directory)
    }

    @Test func anOperationWaitsForACrashCheckButNotForAnotherOperation() throws {
        let (guests, directory) = try Self.guests()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let name = try GuestName("g1")
        _ = try guests.create(GuestSpecification(name: name, kind: .builtin, memoryBytes: 32 << 20))

        #expect(guests.tryClaim(name, "a migration"))
        #expect(throws: AgentAPIError.self) { try guests.delete(name, removeDisks: true) }
        #expect(!guests.tryClaim(name, "a cold migration"), "a real operation is not waited for")
        guests.release(name)

        #expect(guests.tryClaim(name, HostGuests.crashCheck))
        #expect(!guests.tryClaim(name, HostGuests.crashCheck), "a crash check does not wait for another")
        let released = Date().addingTimeInterval(0.3)
        Thread.detachNewThread {
            Thread.sleep(until: released)
            guests.release(name)
        }
        try guests.delete(name, removeDisks: true)
        #expect(Date() >= released, "the delete ran once the crash check ended")
        #expect(try guests.list().isEmpty)
    }
}
