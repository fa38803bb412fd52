import FerryHostModel
import FerryTestSupport
import Foundation
import GRDB
import Glibc
import Testing

@testable import FerryInventory

/// A real process writing journaled transitions is killed with SIGKILL at random moments; after
/// each kill the file opens, passes SQLite's integrity check, and its journal and states agree:
/// every guest's generation is exactly its number of journal rows (no half of a transaction).
@Suite struct InventoryKillTests {
    static let writer: String = {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("inventory-writer").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../.build/debug/inventory-writer").standardized.path
    }()

    @Test(arguments: [SQLiteInventory.Durability.full, .normal])
    func killedWriterLeavesAConsistentInventory(_ durability: SQLiteInventory.Durability) throws {
        let scratch = Scratch(in: "/tmp")
        let path = scratch.file("inventory.sqlite")
        let setup = try SQLiteInventory(path: path)
        for index in 0..<4 {
            let name = "guest-\(index)"
            _ = try setup.create(try specification(name), id: .random(), cause: "create")
            _ = try setup.transition(guestName(name), from: .defined, to: .starting, cause: "start")
            _ = try setup.transition(guestName(name), from: .starting, to: .running, cause: "up")
        }
        try setup.close()
        var generator = SystemRandomNumberGenerator()
        var committed = 12
        for round in 0..<5 {
            let output = Pipe()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.writer)
            process.arguments = [path, durability.rawValue]
            process.standardOutput = output
            try process.run()
            let ready = output.fileHandleForReading.readData(ofLength: 6)
            #expect(String(decoding: ready, as: UTF8.self) == "ready\n", "round \(round): the writer did not start")
            usleep(UInt32.random(in: 20_000...150_000, using: &generator))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL)

            let inventory = try SQLiteInventory(path: path, durability: durability)
            try expectJournalAgreesWithState(inventory)
            let journal = try inventory.journal(latest: Int.max)
            let rows = Dictionary(grouping: journal, by: \.guestID).mapValues(\.count)
            for guest in try inventory.guests() {
                #expect(
                    Int(guest.generation) == rows[guest.id], "guest \(guest.name): generation and journal rows differ")
            }
            #expect(journal.count > committed, "round \(round): the writer committed nothing")
            committed = journal.count
            try inventory.close()
        }
    }
}
