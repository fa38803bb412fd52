import FerryTestSupport
import Foundation
import Glibc
import Testing

/// `ferry demo --guest kvm` as a user runs it: a small KVM guest migrates on loopback and the
/// demo's own transparency check passes. Without a usable /dev/kvm the demo must say so in one
/// line and exit non-zero, which the test then checks instead.
@Suite(
    "ferry demo --guest kvm", .tags(.kvm, .slow), .skippable(.kvm), .skippable(.slow),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct KVMDemoCLITests {
    @Test("a running 64 MiB KVM guest migrates; console continues, checksums and memory equal the reference run")
    func demo() throws {
        let scratch = Scratch("kvm-demo")
        let kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        if kvm >= 0 { close(kvm) }
        let outcome = try FerryProcess.run(
            [
                "demo", "--guest", "kvm", "--size", "64MiB", "--run-before", "1500ms",
                "--dir", scratch.path, "-q",
            ], timeout: 60)
        guard kvm >= 0 else {
            #expect(outcome.status != 0)
            #expect(outcome.stderr.contains("needs KVM"), "no clear reason: \(outcome.stderr)")
            print(
                "KVMDemoCLITests.demo: no usable /dev/kvm here; the demo refused as it should: \(outcome.stderr.split(separator: "\n").last ?? "")"
            )
            return
        }
        #expect(outcome.status == 0, "ferry demo --guest kvm failed: \(outcome.stderr)")
        let lines = outcome.stdout.split(separator: "\n").map(String.init)
        for line in lines
        where line.hasPrefix("transparency check") || line.hasPrefix("demo:") || line.hasPrefix("downtime")
            || line.hasPrefix("console      continues")
        {
            print("ferry demo --guest kvm: \(line)")
        }
        #expect(lines.contains { $0.hasPrefix("transparency check: passed") })
        #expect(lines.contains { $0.hasPrefix("console      continues") && $0.contains("none lost, none repeated") })
        #expect(lines.contains { $0.hasPrefix("demo: migrated a running KVM guest") })
        #expect(outcome.stdout.contains("tracker      kvm"))
    }
}
