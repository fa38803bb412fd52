import FerryAgent
import FerryTestSupport
import Foundation
import Testing

/// Tools/load-gen against a real agent: its signed requests are accepted, the pace it sets
/// reaches the guest, and the guest's reported load follows the pattern.
@Suite(
    "Tools/load-gen", .serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.executable("/usr/bin/python3", "needs python3").met, "needs /usr/bin/python3"))
struct LoadGenTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tools/load-gen/load-gen").path

    /// Runs load-gen with `arguments` (and --json); returns its JSON lines.
    static func run(_ arguments: [String]) throws -> [[String: Any]] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script] + arguments + ["--json"]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let problems = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "load-gen failed: \(problems)")
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test("a square wave from low to high: the paces are set and the guest's load rises with them")
    func squareWaveMovesTheLoad() throws {
        let agent = try GuestAgentFixture("loadgen")
        let created = try agent.guest([
            "create", "--name", "g1", "--vcpus", "1", "--memory", "64M", "--workload", "uniform:8MB/s",
        ])
        try #require(created.status == 0, "\(created.stderr)")
        try #require(try agent.guest(["start", "g1"]).status == 0)
        // Low for the first 4 s, high for the next 4.
        let lines = try Self.run([
            "--agent", agent.url, "--key-file", agent.keyFile, "--guest", "g1", "--pattern", "square",
            "--low", "100KB/s", "--high", "400GB/s", "--period", "8", "--duration", "8", "--noise", "0.1",
        ])
        let paces = lines.filter { $0["event"] as? String == "pace" }
        let samples = lines.filter { $0["event"] as? String == "sample" }
        #expect(!lines.contains { $0["event"] as? String == "error" }, "\(lines)")
        let rates = paces.compactMap { $0["bytes_per_s"] as? Double }
        #expect(rates.first.map { $0 < 200e3 } == true && rates.last.map { $0 > 300e9 } == true, "paces: \(rates)")
        func meanLoad(_ range: Range<Double>) -> Double {
            let loads = samples.filter { range.contains($0["t"] as? Double ?? -1) }.compactMap {
                $0["load_permille"] as? Double
            }
            return loads.isEmpty ? -1 : loads.reduce(0, +) / Double(loads.count)
        }
        let low = meanLoad(1.5..<4)
        let high = meanLoad(5.5..<8)
        print("load-gen square wave: mean load \(low) ‰ at the low pace, \(high) ‰ at the high")
        #expect(low >= 0 && low < 100, "load at the low pace: \(low) ‰; samples \(samples)")
        #expect(high > low + 200, "load at the high pace: \(high) ‰ (low: \(low) ‰)")
        let view = try agent.view("g1")
        #expect(view.usage?.guestLoadPermille.count == 1 && (view.usage?.cpuNanoseconds ?? 0) > 0)
    }

    @Test("POST /v1/guests/{name}/pace: 200 for a running guest, 422 for a bad rate, 409 without a process")
    func paceRoute() throws {
        let agent = try GuestAgentFixture("pace")
        try #require(try agent.guest(["create", "--name", "g1", "--vcpus", "1", "--memory", "64M"]).status == 0)
        let client = try agent.client()
        let body = { (rate: String) in Array("{\"rate\":\"\(rate)\"}".utf8) }
        #expect(try client.send("POST", "/v1/guests/g1/pace", body: body("1MB/s")).status == 409)
        try #require(try agent.guest(["start", "g1"]).status == 0)
        #expect(try client.send("POST", "/v1/guests/g1/pace", body: body("1MB/s")).status == 200)
        #expect(try client.send("POST", "/v1/guests/g1/pace", body: body("fast")).status == 422)
        #expect(try client.send("POST", "/v1/guests/nobody/pace", body: body("1MB/s")).status == 404)
        let view = try agent.view("g1")
        #expect(view.usage?.vcpuCPUNanoseconds.count == 1, "\(String(describing: view.usage))")
    }
}
