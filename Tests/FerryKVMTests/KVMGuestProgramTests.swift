@testable import FerryKVM
import Foundation
import Testing

@Suite("KVM guest program binary")
struct KVMGuestProgramTests {
    @Test("the embedded program is what Tools/kvm-guest/build.sh builds from the sources",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc") && FileManager.default.isExecutableFile(atPath: "/usr/bin/objcopy"),
                   "needs gcc and objcopy in /usr/bin (install gcc and binutils)"))
    func embeddedBytesMatchBuild() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("Tools/kvm-guest/build.sh").path
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-kvm-guest-\(getpid())")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = [script, output.path]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "build.sh failed")
        let built = try [UInt8](Data(contentsOf: output.appendingPathComponent("kvm-guest.bin")))
        #expect(built == KVMGuestProgramImage.bytes,
                "Sources/FerryKVM/KVMGuestProgramImage.swift is stale: run Tools/kvm-guest/build.sh --swift Sources/FerryKVM/KVMGuestProgramImage.swift")
        #expect(built.count <= KVMGuestLayout.workBase - KVMGuestLayout.programBase)
    }
}
