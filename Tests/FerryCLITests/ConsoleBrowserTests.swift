import FerryTestSupport
import Foundation
import Testing

/// The console in a real Chromium with JavaScript turned off (Tests/console/flow.py, Playwright
/// for Python with Debian's chromium, which Tools/setup installs): log in, pick the project,
/// the image and the flavor, name the guest, create it, watch it run, read its bill, suspend and
/// resume it, stop and delete it. A screenshot per step is kept in the directory the test prints. The controller and
/// its three agents each run in a network namespace of their own where the machine allows it, and
/// the browser in the controller's.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ConsoleBrowserTests {
    static let python =
        (ProcessInfo.processInfo.environment["FERRY_BROWSER_VENV"]
            ?? (ProcessInfo.processInfo.environment["HOME"] ?? "/root") + "/.cache/ferry/browser-venv") + "/bin/python"
    static let browser = Requirement(
        met: FileManager.default.isExecutableFile(atPath: python)
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"),
        why: "needs Playwright for Python in \(python) and /usr/bin/chromium (run Tools/setup)")

    @Test(.enabled(if: browser.met, browser.why))
    func aPersonCreatesAGuestInChromium() throws {
        let cloud = try ControlPlaneFixture("conb", namespaced: Requirement.namespaces.met)
        let password = "correct horse battery staple"
        #expect(try cloud.json("POST", "/v1/users", ["name": "alice", "password": password]).0 == 201)
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/alice", ["role": "member"]).0 == 200)
        let stamp = Int(Date().timeIntervalSince1970)
        let shots = "/tmp/ferry-console-screenshots/\(stamp)"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("console/flow.py").path
        let process = Process()
        let command = cloud.namespacePrefix(0) + [Self.python, script, cloud.url, "alice", password, "alpha", shots]
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print("console screenshots: \(shots)")
        #expect(process.terminationStatus == 0, "flow.py: \(text)")
        let taken = (try? FileManager.default.contentsOfDirectory(atPath: shots)) ?? []
        #expect(taken.count >= 12, "screenshots: \(taken.sorted())")
    }
}
