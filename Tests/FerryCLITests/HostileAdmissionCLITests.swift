import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Issue 11, finding 7, as a user meets it: sources that are refused, vanish or stall before
/// their migration is established do not spend a one-shot `ferry receive --image`.
@Suite(.serialized, .tags(.slow), .skippable(.slow), .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct HostileAdmissionCLITests {
    /// A source with a key (refused: this destination has none), one whose connection is cut at
    /// GUEST_CONFIG (it vanishes after ACCEPT) and one that goes silent at GUEST_CONFIG (a
    /// stalled, tentative session) come first; `ferry receive` logs them, is not busy for the real
    /// source that comes next, receives its guest and exits 0.
    @Test func oneShotReceiveOutlivesStrangers() throws {
        let scratch = Scratch("hostile-admission")
        let image = scratch.file("vm.img")
        let target = scratch.file("received.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M", "--seed", "3"]).status == 0)
        #expect(try FerryProcess.run(["keygen", "--out", scratch.file("a.key")]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", target, "--accept-timeout", "60s",
        ])
        let port = try #require(FaultMatrixTests.listeningPort(receiver))
        // Each source runs its own guest on its own image.
        for name in ["keyed", "vanished", "stalled"] {
            try FileManager.default.copyItem(atPath: image, toPath: scratch.file(name + ".img"))
        }
        let options = ["--workload", "uniform:5MB/s", "--vcpus", "1", "--streams", "1", "-q"]
        let send = ["send", "--image", image] + options
        func stranger(_ name: String) -> [String] { ["send", "--image", scratch.file(name + ".img")] + options }

        let keyed = try FerryProcess.run(
            stranger("keyed") + ["--to", "127.0.0.1:\(port)", "--key-file", scratch.file("a.key")], timeout: 30)
        #expect(keyed.status == 3, "refused: \(keyed.stderr)")

        let cut = try PhaseFaultRelay(upstreamPort: port, phase: .handshake, fault: .cut)
        defer { cut.stop() }
        let vanished = try FerryProcess.run(stranger("vanished") + ["--to", "127.0.0.1:\(cut.port)"], timeout: 30)
        #expect(
            vanished.status != 0 && vanished.stderr.contains("guest ran on the source until now"), "\(vanished.stderr)")

        let silent = try PhaseFaultRelay(upstreamPort: port, phase: .handshake, fault: .blackhole)
        defer { silent.stop() }
        let stalled = try FerryProcess(stranger("stalled") + ["--to", "127.0.0.1:\(silent.port)"])
        Thread.sleep(forTimeInterval: 1)

        let start = Date()
        let real = try FerryProcess.run(send + ["--to", "127.0.0.1:\(port)"], timeout: 60)
        let seconds = Date().timeIntervalSince(start)
        #expect(real.status == 0, "the real source must migrate: \(real.stderr)")
        let received = receiver.wait(timeout: 30)
        #expect(received.signal == nil && received.status == 0, "ferry receive: \(received.stderr)")
        #expect(received.stdout.contains("destination report: migrated"), "\(received.stdout)")
        #expect(received.stderr.contains("never established"), "the strangers are logged: \(received.stderr)")
        #expect(try filesEqual(image, target))
        _ = stalled.wait(timeout: 0)
        print(
            "one-shot ferry receive after a refused, a vanished and a stalled source: the real migration took \(String(format: "%.2f", seconds)) s"
        )
    }
}
