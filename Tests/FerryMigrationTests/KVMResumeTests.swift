import FerryGuest
import FerryGuestMigration
import FerryKVM
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

@testable import FerryMigration

/// Resume after a network cut with a KVM guest: KVM's dirty log stays armed through the outage,
/// the destination's VM (built at GUEST_CONFIG) waits, and the guest continues on the
/// destination exactly as if it had never migrated. Skipped, with the reason, where /dev/kvm is
/// not usable.
@Suite(
    .serialized, .tags(.kvm, .slow), .skippable(.kvm), .skippable(.slow),
    .enabled(if: Requirement.kvm.met, Requirement.kvm.why)) struct KVMResumeTests
{
    /// Steps each vCPU runs in all: at 120 MB/s about 5 s of guest time, so that the guest is
    /// still running when a migration slowed by a loaded test machine (four forced rounds, a cut
    /// and a resume) switches over; the destination runs the rest.
    static let stepLimit: UInt64 = 80_000

    /// `cutAt`: where the relay cuts, as a share of round 0's bytes (> 1: in a later round).
    @Test(arguments: [0.8, 1.05])
    func kvmGuestResumesAfterACut(cutAt: Double) throws {
        let scratch = Scratch()
        let size = 64 << 20
        let mix = ImageMix(zero: 0, sparse: 10, text: 40, random: 50)
        for name in ["source.img", "reference.img"] {
            try ImageGenerator.create(
                path: scratch.file(name), size: size, mix: mix, seed: 5, pageSize: systemPageSize, overwrite: true)
        }
        var parameters = KVMGuestParameters.dirtying(
            bytesPerSecond: 120e6, seed: 0xc07, vcpus: 2, stepLimit: Self.stepLimit)
        parameters.printInterval = 2048
        let destination = DestinationAgent(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: scratch.file("destination.img"),
                runFor: .seconds(30),
                acceptTimeout: .milliseconds(20_000), receiveTimeout: .milliseconds(20_000), resumeTimeout: .seconds(10)
            ), logger: testLogger)
        let port = try destination.bind()
        let received = BackgroundThread { try destination.run() }
        let relay = try Relay(to: port)
        defer { relay.stop() }
        relay.cut(afterBytes: Int(Double(size / systemPageSize * (systemPageSize + 24)) * cutAt))

        let region = try MappedRegion.mapFile(path: scratch.file("source.img"), writable: true)
        try SourceAgent.faultIn(region, path: scratch.file("source.img"), pageSize: systemPageSize)
        let guest = try KVMGuest(memory: region.base, size: size, parameters: parameters, logger: testLogger)
        guest.start()
        Thread.sleep(forTimeInterval: 0.5)
        var options = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(relay.port)"), compression: .none,
            replyTimeout: .milliseconds(20_000), streams: 2)
        // A later-round cut needs later rounds: never converge on its own, switch over after four.
        if cutAt > 1 {
            options.settings = ConvergenceSettings(
                downtimeTarget: .seconds(0.000_001), maxRounds: 4, timeout: .seconds(60),
                autoConverge: false, forceSwitchover: true)
        }
        options.handoffTimeout = .milliseconds(5_000)
        let agent = SourceAgent(
            guest: KVMMigratableGuest(guest), imagePath: scratch.file("source.img"),
            options: options, logger: testLogger)
        let outcome = Result { try agent.migrate() }
        if case .failure = outcome { guest.stop() }
        let sourceLines = guest.consoleLines
        let result = try received.wait()
        let report = try outcome.get()
        #expect(report.verified && result.report.verified)
        #expect(relay.cutCount == 1)
        #expect(report.resumes == 1 && result.report.resumes == 1)
        let record = try #require(report.resumeRecords.first)
        print(
            "KVM resume after a cut at \(Int(cutAt * 100))% of round 0's bytes: lost round \(record.round), destination held \(record.pagesHeld) of \(size / systemPageSize) pages, \(record.pagesDirtied) dirtied, resent \(record.pagesResent); downtime \(report.downtimeMs) ms; paused at steps \(report.vcpuSteps)"
        )
        #expect(result.report.vcpuSteps == [Self.stepLimit, Self.stepLimit])
        #expect(
            report.vcpuSteps.allSatisfy { $0 < Self.stepLimit }, "the guest finished on the source before the migration"
        )

        let reference = try MappedRegion.mapFile(path: scratch.file("reference.img"), writable: true)
        let expected = KVMGuestReference(parameters: parameters, memory: reference.base, memorySize: size)
        let problem = expected.continuityProblem(before: sourceLines, after: result.kvmConsole)
        #expect(problem == nil, "console across the migration: \(problem ?? "")")
        let image = try MappedRegion.mapFile(path: scratch.file("destination.img"), writable: false)
        let work = KVMGuestLayout.workBase
        #expect(
            memcmp(image.base + work, reference.base + work, size - work) == 0,
            "the migrated working area differs from a run that never migrated")
    }
}
