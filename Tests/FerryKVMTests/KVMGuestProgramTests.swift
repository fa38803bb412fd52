import FerryTestSupport
import Foundation
import Testing

@testable import FerryKVM

@Suite("KVM guest program binary")
struct KVMGuestProgramTests {
    @Test(
        "the embedded program is what Tools/kvm-guest/build.sh builds from the sources",
        .enabled(if: Requirement.gcc.met, Requirement.gcc.why))
    func embeddedBytesMatchBuild() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let script = root.appendingPathComponent("Tools/kvm-guest/build.sh").path
        let scratch = Scratch("kvm-guest", in: NSTemporaryDirectory())
        let output = URL(fileURLWithPath: scratch.path)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = [script, output.path]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "build.sh failed")
        let built = try [UInt8](Data(contentsOf: output.appendingPathComponent("kvm-guest.bin")))
        #expect(
            built == KVMGuestProgramImage.bytes,
            "Sources/FerryKVM/KVMGuestProgramImage.swift is stale: run Tools/kvm-guest/build.sh --swift Sources/FerryKVM/KVMGuestProgramImage.swift"
        )
        #expect(built.count <= KVMGuestLayout.workBase - KVMGuestLayout.programBase)
    }
}
