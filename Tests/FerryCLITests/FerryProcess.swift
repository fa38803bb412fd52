import FerryTestSupport
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
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../.build/debug/ferry"
        ).standardized.path
    }()

    struct Outcome {
        var status: Int32
        /// The signal that ended the process (e.g. SIGKILL, SIGBUS), nil when it exited.
        var signal: Int32? = nil
        var stdout: String
        var stderr: String
    }

    let process = Process()
    /// Output goes to files, not pipes: pipe readability handlers are dispatch sources, and many
    /// processes at once (the fault matrix runs four cases in parallel) crashed libdispatch's
    /// event loop. Files need no reader while the process runs.
    private let outPath: String
    private let errPath: String

    /// Starts `ferry ARGS` (or `prefix + [ferry] + ARGS`, e.g. `ip netns exec NS`). With
    /// `standardError` (a pipe's or a terminal's end, see `OutputCapture`) stderr goes there and
    /// `Outcome.stderr` is empty.
    init(_ arguments: [String], prefix: [String] = [], standardError: FileHandle? = nil) throws {
        if prefix.isEmpty {
            process.executableURL = URL(fileURLWithPath: Self.executable)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: prefix[0])
            process.arguments = Array(prefix.dropFirst()) + [Self.executable] + arguments
        }
        let stem = ScratchFile("cli-output", in: "/tmp").path
        outPath = stem + ".out"
        errPath = stem + ".err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer {
            try? out.close()
            try? err.close()
        }
        process.standardOutput = out
        process.standardError = standardError ?? err
        try process.run()
    }

    private var stdoutText: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    private var stderrText: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

    /// Waits (at most `timeout` seconds, then kills it) and returns what it printed.
    func wait(timeout: Double = 120) -> Outcome {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let outcome = Outcome(
            status: process.terminationStatus,
            signal: process.terminationReason == .uncaughtSignal ? process.terminationStatus : nil,
            stdout: stdoutText, stderr: stderrText)
        try? FileManager.default.removeItem(atPath: outPath)
        try? FileManager.default.removeItem(atPath: errPath)
        return outcome
    }

    /// Waits until stderr contains a line matching `prefix` and returns that line.
    func waitForStderrLine(containing text: String, timeout: Double = 30) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = stderrText.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
            if !process.isRunning { break }
            usleep(10_000)
        }
        return stderrText.split(separator: "\n").first(where: { $0.contains(text) }).map(String.init)
    }

    /// The lines on stderr so far that contain `text`.
    func stderrLines(containing text: String) -> [String] {
        stderrText.split(separator: "\n").filter { $0.contains(text) }.map(String.init)
    }

    static func run(_ arguments: [String], prefix: [String] = [], timeout: Double = 120) throws -> Outcome {
        try FerryProcess(arguments, prefix: prefix).wait(timeout: timeout)
    }

    /// The suites that run `ferry` need it built (`swift build`, or `swift build --build-tests`).
    static let built = Requirement.executable(
        executable, "needs the ferry executable built next to the tests (swift build)")
}
