import FerryHostModel
import FerryInventory
import Foundation
import Glibc
import Logging

// Journaled transitions per second: each is one transaction that checks the expected state,
// updates the guest's row (state, generation) and appends its journal row, then commits.
// Guests flip running ⇄ paused round-robin, as an agent's API would drive them.

struct Options {
    var directories = ["/var/tmp", "/dev/shm"]
    var transitions = 3000
    var reps = 3
    var guests = 20

    init(_ arguments: [String]) {
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            let value = iterator.next() ?? ""
            switch argument {
            case "--dir": directories = value.split(separator: ",").map(String.init)
            case "--transitions": transitions = Int(value) ?? transitions
            case "--reps": reps = Int(value) ?? reps
            case "--guests": guests = Int(value) ?? guests
            default:
                FileHandle.standardError.write(
                    Data("usage: inventory-bench [--dir DIR[,DIR]] [--transitions N] [--reps N] [--guests N]\n".utf8))
                exit(2)
            }
        }
    }
}

func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// One run: a fresh inventory file, `guests` running guests, `transitions` flips timed one by one.
func run(directory: String, durability: SQLiteInventory.Durability, options: Options) throws -> [UInt64] {
    let path = "\(directory)/ferry-inventory-bench-\(getpid()).sqlite"
    defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
    var logger = Logger(label: "ferry.inventory")
    logger.logLevel = .warning
    let inventory = try SQLiteInventory(path: path, durability: durability, logger: logger)
    var states: [GuestName: GuestState] = [:]
    for index in 0..<options.guests {
        let name = try GuestName("guest-\(index)")
        _ = try inventory.create(
            GuestSpecification(name: name, kind: .builtin, memoryBytes: 64 << 20), id: .random(), cause: "bench")
        _ = try inventory.transition(name, from: .defined, to: .starting, cause: "bench")
        _ = try inventory.transition(name, from: .starting, to: .running, cause: "bench")
        states[name] = .running
    }
    let names = states.keys.sorted()
    var latencies: [UInt64] = []
    latencies.reserveCapacity(options.transitions)
    for step in 0..<options.transitions {
        let name = names[step % names.count]
        let from = states[name]!
        let next: GuestState = from == .running ? .paused : .running
        let start = monotonicNanoseconds()
        _ = try inventory.transition(name, from: from, to: next, cause: "bench: flip \(step)")
        latencies.append(monotonicNanoseconds() - start)
        states[name] = next
    }
    let journal = try inventory.journal(latest: Int.max)
    precondition(journal.count == options.guests * 3 + options.transitions, "journal rows missing")
    try inventory.close()
    return latencies
}

func percentile(_ sorted: [UInt64], _ fraction: Double) -> Double {
    Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) / 1000
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
print(
    "inventory-bench: \(options.transitions) journaled transitions per run over \(options.guests) guests, \(options.reps) runs"
)
print("directory        synchronous  transitions/s (median, min–max)     µs p50    p99    max")
for directory in options.directories {
    for durability in SQLiteInventory.Durability.allCases {
        var rates: [Double] = []
        var all: [UInt64] = []
        for _ in 0..<options.reps {
            let latencies = try run(directory: directory, durability: durability, options: options)
            rates.append(Double(latencies.count) / (Double(latencies.reduce(0, +)) / 1e9))
            all += latencies
        }
        rates.sort()
        all.sort()
        func padded(_ text: String, _ width: Int) -> String {
            text.padding(toLength: width, withPad: " ", startingAt: 0)
        }
        let rate = String(format: "%.0f (%.0f–%.0f)", rates[rates.count / 2], rates.first!, rates.last!)
        let micros = String(
            format: "%7.0f %6.0f %6.0f", percentile(all, 0.5), percentile(all, 0.99), Double(all.last!) / 1000)
        let line = padded(directory, 17) + padded(durability.rawValue.uppercased(), 13) + padded(rate, 32) + micros
        print(line)
    }
}
