import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// `set-pace` and the guest-reported load in `status` (docs/vmm-control.md), for both kinds.
@Suite(
    "ferry vmm: set-pace and the guest's reported load", .serialized,
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct VMMPaceTests {
    /// Steps per second over `seconds`, and the load the guest reports after a fresh interval.
    static func sample(_ vmm: VMMHarness, _ client: VMMControlClient, seconds: Double) throws -> (
        stepsPerSecond: Double, load: Int?, status: JSONValue
    ) {
        let before = try vmm.steps(client)
        usleep(UInt32(seconds * 1e6))
        let rate = Double(try vmm.steps(client) - before) / seconds
        usleep(1_100_000)  // a whole load interval at this pace
        let status = try client.call("status")
        return (rate, status["load_permille"]?.intValue, status)
    }

    static func paceFalls(kind: String, workload: String) throws {
        let vmm = VMMHarness("vmm-pace-\(kind)")
        let (_, _) = try vmm.detach(["--spec", try vmm.specFile(kind: kind, vcpus: 1, workload: workload)])
        let client = try vmm.client()
        #expect(try client.call("set-pace", ["rate": "unpaced"])["rate"]?.stringValue == "unpaced")
        usleep(1_200_000)
        let high = try sample(vmm, client, seconds: 0.5)
        #expect(try client.call("set-pace", ["rate": "1MB/s"])["rate"]?.stringValue == "1MB/s")
        usleep(200_000)
        let low = try sample(vmm, client, seconds: 1)
        print(
            "\(kind) vmm: unpaced \(Int(high.stepsPerSecond)) steps/s, load \(high.load ?? -1) ‰; at 1MB/s \(Int(low.stepsPerSecond)) steps/s, load \(low.load ?? -1) ‰"
        )
        let perVCPU = high.status["guest_load_permille"]?.arrayValue ?? []
        #expect(perVCPU.count == 1, "\(high.status.line)")
        #expect(
            low.stepsPerSecond < high.stepsPerSecond / 10, "steps/s: \(high.stepsPerSecond) then \(low.stepsPerSecond)")
        #expect(low.stepsPerSecond < 1e6 / 4096 * 2, "\(low.stepsPerSecond) steps/s at 1MB/s")
        let highLoad = try #require(high.load, "no load reported: \(high.status.line)")
        let lowLoad = try #require(low.load, "no load reported: \(low.status.line)")
        #expect(lowLoad < highLoad / 2, "load \(highLoad) ‰ then \(lowLoad) ‰")
        #expect(lowLoad < 200)
        #expect(throws: VMMError.self) { try client.call("set-pace", ["rate": "fast"]) }
        #expect(throws: VMMError.self) { try client.call("set-pace") }
    }

    @Test("a built-in guest's steps per second and reported load fall after a set-pace to a lower rate")
    func builtinPaceFalls() throws {
        try Self.paceFalls(kind: "builtin", workload: "uniform:8MB/s")
    }

    @Test(
        "a KVM guest's steps per second and reported load fall after a set-pace to a lower rate",
        .tags(.kvm), .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func kvmPaceFalls() throws {
        try Self.paceFalls(kind: "kvm", workload: "kvm:8MB/s")
    }

    @Test("an idle built-in guest has no rate to change")
    func idleGuestRefuses() throws {
        let vmm = VMMHarness("vmm-pace-idle")
        _ = try vmm.detach(["--spec", try vmm.specFile(vcpus: 1, workload: "idle")])
        let client = try vmm.client()
        #expect(throws: VMMError.self) { try client.call("set-pace", ["rate": "1MB/s"]) }
        let status = try client.call("status")
        #expect(status["guest_load_permille"]?.arrayValue?.count == 1, "\(status.line)")
    }
}
