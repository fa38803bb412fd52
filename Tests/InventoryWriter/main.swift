import FerryHostModel
import FerryInventory
import Foundation
import Logging

// A process for the inventory's kill -9 test (InventoryKillTests): opens the inventory at
// argv[1] and flips every guest running ⇄ paused, one journaled transaction after another,
// until it is killed. Prints "ready" once it has committed its first transition.
guard CommandLine.arguments.count == 3, let durability = SQLiteInventory.Durability(rawValue: CommandLine.arguments[2])
else {
    FileHandle.standardError.write(Data("usage: inventory-writer PATH full|normal\n".utf8))
    exit(2)
}
var logger = Logger(label: "ferry.inventory")
logger.logLevel = .warning
do {
    let inventory = try SQLiteInventory(path: CommandLine.arguments[1], durability: durability, logger: logger)
    var announced = false
    while true {
        for guest in try inventory.guests() {
            let next: GuestState = guest.state == .running ? .paused : .running
            _ = try inventory.transition(
                guest.name, from: guest.state, to: next, cause: "writer \(getpid())", generation: guest.generation)
            if !announced {
                FileHandle.standardOutput.write(Data("ready\n".utf8))
                announced = true
            }
        }
    }
} catch {
    FileHandle.standardError.write(Data("inventory-writer: \(error)\n".utf8))
    exit(1)
}
