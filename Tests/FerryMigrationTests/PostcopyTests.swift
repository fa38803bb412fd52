import FerryGuest
import FerryGuestMigration
import FerryKVM
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Testing

@testable import FerryMigration

/// Post-copy between two engines on loopback (Protocol.md section 11, docs/postcopy.md): a
/// guest that outpaces pre-copy switches after one round, runs on the destination while its
/// stale pages follow, and ends byte for byte where a guest that never moved would be.
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct PostcopyTests {
    /// A guest dirtying far faster than the 1 ms downtime target allows: pre-copy cannot
    /// converge, so after one round the guest switches and runs on the destination.
    static func migration() -> LoopbackMigration {
        var migration = LoopbackMigration()
        migration.size = 64 << 20
        migration.workload = "uniform:400MB/s"
        migration.settings = ConvergenceSettings(
            downtimeTarget: .milliseconds(1), maxRounds: 30, timeout: .seconds(60), autoConverge: false)
        migration.runFor = 0.3
        migration.adjustSource = { $0.settings.postcopy = PostcopySettings(afterRounds: 1) }
        return migration
    }

    @Test("a guest that outpaces pre-copy switches after one round; its pages follow; it ends as if it never moved")
    func switchesAndFinishes() throws {
        let scratch = Scratch()
        let migration = Self.migration()
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        let postcopy = try #require(report.postcopy, "the migration did not switch to post-copy")
        #expect(report.verified && report.guestLocation == .destination && report.outcome == .succeeded)
        #expect(postcopy.afterRounds == 1 && postcopy.stalePages > 0, "\(postcopy)")
        #expect(postcopy.requestedPages + postcopy.pushedPages == postcopy.stalePages, "\(postcopy)")
        let arrived = try #require(destination.report.postcopy)
        #expect(destination.report.verified && arrived.stalePages == postcopy.stalePages, "\(arrived)")
        // The guest ran on at the destination while its pages came: it asked for some.
        #expect(arrived.requests > 0 && arrived.faultWaitP50Ms != nil, "\(arrived)")
        // Its progress: counted here during the push and after it.
        let progress = try #require(destination.report.progress)
        #expect(progress.postcopySteps != nil && progress.afterSteps != nil, "\(progress)")
        #expect(try #require(report.progress).duringSteps ?? 0 > 0)
        #expect(zip(destination.finalStates.map(\.step), report.vcpuSteps).allSatisfy { $0 >= $1 })
        try Transparency.runReference(
            imagePath: scratch.file("reference.img"), setup: outcome.setup,
            steps: destination.finalStates.map(\.step), logger: testLogger)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("reference.img"))
                == nil)
        print(
            "post-copy: downtime \(report.downtimeMs) ms, \(postcopy.stalePages) stale pages (\(arrived.requestedPages) asked for in \(arrived.requests) requests, \(postcopy.pushedPages) pushed) in \(postcopy.durationMs) ms; fault wait p50 \(arrived.faultWaitP50Ms ?? -1) ms p99 \(arrived.faultWaitP99Ms ?? -1) ms max \(arrived.faultWaitMaxMs ?? -1) ms"
        )
    }

    /// A destination whose image is not on tmpfs cannot serve missing pages: it does not offer
    /// post-copy, and the migration stays pre-copy (here it gives up, the guest stays put).
    @Test("a destination on a disk file system does not offer post-copy; the source keeps its guest")
    func notOfferedOffTmpfs() throws {
        let directory = "/var/tmp"
        guard (try? ImageFile.filesystemType(directoryOf: directory + "/x")) != "tmpfs" else {
            try Test.cancel("/var/tmp is tmpfs here")
        }
        let scratch = Scratch(in: directory)
        var migration = Self.migration()
        migration.settings.maxRounds = 3
        let outcome = try migration.run(in: scratch)
        #expect(outcome.sourceReport?.postcopy == nil)
        #expect(throws: MigrationError.self) { try outcome.source.get() }
        #expect(outcome.guestWasRunningAfterFailure, "the guest did not keep running on the source")
    }

    /// The connection cut at the first PAGE_REQUEST, after COMMIT: the guest's touched pages
    /// wait, the source comes back with RESUME, learns what the destination has, and sends the
    /// rest; the guest ends as if it never moved (Protocol.md 11.4).
    @Test("a cut during post-copy is resumed: the guest waits, the rest follows, nothing is lost")
    func aCutIsResumed() throws {
        let scratch = Scratch()
        var migration = Self.migration()
        let relay = migration.cutFirst(.pageRequest, going: .toSource)
        defer { relay.value?.stop() }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(relay.value?.cutCount == 1)
        #expect(report.postcopy != nil && report.resumes == 1 && destination.report.resumes == 1)
        #expect(report.verified && destination.report.verified && report.guestLocation == .destination)
        let record = try #require(report.resumeRecords.first)
        try Transparency.runReference(
            imagePath: scratch.file("reference.img"), setup: outcome.setup,
            steps: destination.finalStates.map(\.step), logger: testLogger)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("reference.img"))
                == nil)
        print(
            "post-copy cut at the first request: resumed after \(record.outageMs) ms, destination held \(record.pagesHeld) pages, \(record.pagesResent) sent after the resume"
        )
    }

    /// The source unreachable for good after a cut during post-copy (as if it died): its
    /// reconnects fail, the destination's wait ends; the guest is lost, both sides say so, and
    /// the source never resumes its paused copy.
    @Test("the source gone during post-copy: both sides report the guest lost; the source does not resume it")
    func theSourceGoneLosesTheGuest() throws {
        let scratch = Scratch()
        var migration = Self.migration()
        migration.destinationResumeTimeout = 2
        migration.adjustSource = {
            $0.settings.postcopy = PostcopySettings(afterRounds: 1)
            $0.reconnectAttempts = 2
        }
        let relay = Box<Relay>()
        migration.route = { port in
            let made = try Relay(
                to: port, options: Relay.Options(halfClose: true, afterCut: .stopListening),
                onFrame: Relay.cutFirst(.pageRequest, going: .toSource))
            relay.value = made
            return made.port
        }
        defer { relay.value?.stop() }
        let outcome = try migration.run(in: scratch)
        let sourceError = try #require(outcome.source.failure as? MigrationError)
        #expect(sourceError.guest == .lost && sourceError.message.contains("the guest is lost"), "\(sourceError)")
        #expect(!outcome.guestWasRunningAfterFailure, "the source resumed a guest it handed over")
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(
            destinationError.guest == .lost && destinationError.message.contains("the guest is lost"),
            "\(destinationError)")
        // The incomplete image never passes for the guest's.
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img")))
        #expect(FileManager.default.fileExists(atPath: scratch.file("destination.img.lost")))
    }
}

/// Post-copy with a KVM guest: KVM's own accesses to guest memory (the vCPUs in guest mode,
/// the kernel reading it) wait on the destination's missing pages as the built-in guest's
/// threads do. Skipped, with the reason, where /dev/kvm is not usable.
@Suite(
    .serialized, .tags(.kvm, .slow), .skippable(.kvm), .skippable(.slow),
    .enabled(if: Requirement.kvm.met, Requirement.kvm.why)) struct KVMPostcopyTests
{
    static let stepLimit: UInt64 = 80_000

    @Test("a KVM guest switches to post-copy after one round and finishes on the destination as if it never moved")
    func kvmGuestFinishesAfterPostcopy() throws {
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
        let region = try MappedRegion.mapFile(path: scratch.file("source.img"), writable: true)
        try SourceAgent.faultIn(region, path: scratch.file("source.img"), pageSize: systemPageSize)
        let guest = try KVMGuest(memory: region.base, size: size, parameters: parameters, logger: testLogger)
        guest.start()
        Thread.sleep(forTimeInterval: 0.5)
        var options = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(port)"), compression: .none,
            replyTimeout: .milliseconds(20_000), streams: 2)
        options.settings = ConvergenceSettings(
            downtimeTarget: .seconds(0.000_001), maxRounds: 30, timeout: .seconds(60), autoConverge: false)
        options.settings.postcopy = PostcopySettings(afterRounds: 1)
        let agent = SourceAgent(
            guest: KVMMigratableGuest(guest), imagePath: scratch.file("source.img"), options: options,
            logger: testLogger)
        let outcome = Result { try agent.migrate() }
        if case .failure(let error) = outcome {
            guest.stop()
            Issue.record("the source failed: \(error)")
        }
        let sourceLines = guest.consoleLines
        let result = try received.wait()
        let report = try outcome.get()
        let postcopy = try #require(report.postcopy, "the migration did not switch to post-copy")
        let arrived = try #require(result.report.postcopy)
        #expect(report.verified && result.report.verified && postcopy.stalePages > 0)
        print(
            "KVM post-copy: downtime \(report.downtimeMs) ms, \(postcopy.stalePages) stale pages (\(arrived.requestedPages) asked for, \(postcopy.pushedPages) pushed) in \(postcopy.durationMs) ms; fault wait p50 \(arrived.faultWaitP50Ms ?? -1) ms p99 \(arrived.faultWaitP99Ms ?? -1) ms"
        )
        #expect(result.report.vcpuSteps == [Self.stepLimit, Self.stepLimit])
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
