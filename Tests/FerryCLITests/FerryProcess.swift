import Foundation
import Glibc

/// The `ferry` executable built next to this test bundle, run as a user runs it.
struct FerryProcess {
    static let executable: String = {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = bundle.deletingLastPathComponent()
        // Swift Testing may run from inside FerryPackageTests.xctest; the products sit beside it.
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("ferry").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug/ferry").standardized.path
    }()

    struct Outcome {
        var status: Int32
        /// The signal that ended the process (e.g. SIGKILL, SIGBUS), nil when it exited.
        var signal: Int32? = nil
        var stdout: String
        var stderr: String
    }

    let process = Process()
    private let out = Pipe()
    private let err = Pipe()
    private let collected = CollectedOutput()

    /// Starts `ferry ARGS` (or `prefix + [ferry] + ARGS`, e.g. `ip netns exec NS`).
    init(_ arguments: [String], prefix: [String] = []) throws {
        if prefix.isEmpty {
            process.executableURL = URL(fileURLWithPath: Self.executable)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: prefix[0])
            process.arguments = Array(prefix.dropFirst()) + [Self.executable] + arguments
        }
        process.standardOutput = out
        process.standardError = err
        let collected = self.collected
        out.fileHandleForReading.readabilityHandler = { handle in collected.append(handle.availableData, stderr: false) }
        err.fileHandleForReading.readabilityHandler = { handle in collected.append(handle.availableData, stderr: true) }
        try process.run()
    }

    /// Waits (at most `timeout` seconds, then kills it) and returns what it printed.
    func wait(timeout: Double = 120) -> Outcome {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        out.fileHandleForReading.readabilityHandler = nil
        err.fileHandleForReading.readabilityHandler = nil
        collected.append(out.fileHandleForReading.readDataToEndOfFile(), stderr: false)
        collected.append(err.fileHandleForReading.readDataToEndOfFile(), stderr: true)
        return Outcome(status: process.terminationStatus,
                       signal: process.terminationReason == .uncaughtSignal ? process.terminationStatus : nil,
                       stdout: collected.stdout, stderr: collected.stderr)
    }

    /// Waits until stderr contains a line matching `prefix` and returns that line.
    func waitForStderrLine(containing text: String, timeout: Double = 30) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = collected.stderr.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
            if !process.isRunning { break }
            usleep(10_000)
        }
        return collected.stderr.split(separator: "\n").first(where: { $0.contains(text) }).map(String.init)
    }

    static func run(_ arguments: [String], prefix: [String] = [], timeout: Double = 120) throws -> Outcome {
        try FerryProcess(arguments, prefix: prefix).wait(timeout: timeout)
    }
}

final class CollectedOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var out = Data()
    private var err = Data()

    func append(_ data: Data, stderr: Bool) {
        lock.lock()
        defer { lock.unlock() }
        if stderr { err.append(data) } else { out.append(data) }
    }

    var stdout: String { lock.lock(); defer { lock.unlock() }; return String(decoding: out, as: UTF8.self) }
    var stderr: String { lock.lock(); defer { lock.unlock() }; return String(decoding: err, as: UTF8.self) }
}

/// A scratch directory on tmpfs, removed when the test ends.
final class ScratchDirectory {
    let path: String

    init(_ name: String) {
        path = "/dev/shm/ferry-cli-test-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: path)
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }
}

func filesEqual(_ a: String, _ b: String) throws -> Bool {
    let cmp = Process()
    cmp.executableURL = URL(fileURLWithPath: "/usr/bin/cmp")
    cmp.arguments = ["-s", a, b]
    try cmp.run()
    cmp.waitUntilExit()
    return cmp.terminationStatus == 0
}
