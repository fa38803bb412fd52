import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// `ferry vmm` with the KVM guest: its own console lines come through the control socket, and
/// suspend/--restore continues it.
@Suite(
    "ferry vmm with a KVM guest", .serialized, .tags(.kvm), .skippable(.kvm),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct VMMKVMTests {
    @Test(
        "boot, console, pause/resume, suspend and restore a KVM guest",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func kvmGuest() throws {
        let vmm = VMMHarness("vmm-kvm")
        let spec = try vmm.specFile(kind: "kvm", vcpus: 1, memoryMiB: 64, workload: "kvm:20MB/s,interval=5000")
        let process = try vmm.start(["--spec", spec])
        let client = try vmm.client()
        #expect(try client.call("hello")["kind"]?.stringValue == "kvm")
        usleep(500_000)
        let console = try client.call("console", ["since": 0])
        let guestLines = console["lines"]?.arrayValue?.filter { $0["vcpu"] != .null } ?? []
        #expect(!guestLines.isEmpty, "no console line from the KVM guest: \(console.line)")
        #expect(try client.call("pause")["state"]?.stringValue == "paused")
        #expect(try client.call("resume")["state"]?.stringValue == "running")
        let file = try #require(try client.call("suspend")["file"]?.stringValue)
        #expect(process.wait(timeout: 10).status == 0)
        _ = try vmm.detach(["--restore", file])
        let restored = try vmm.client()
        let steps = try vmm.steps(restored)
        usleep(300_000)
        #expect(try vmm.steps(restored) > steps, "the restored KVM guest does not run")
        #expect(try restored.call("status")["failure"] == .null)
        let cpu = try restored.call("status")["vcpu_cpu_ns"]?.arrayValue?.compactMap(\.doubleValue) ?? []
        #expect(cpu.count == 1 && cpu[0] > 0, "the KVM vCPU thread's CPU time: \(cpu)")
    }
}
