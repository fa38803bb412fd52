import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Testing

@testable import FerryMigration

/// A source guest on its own image, migrating to `port` when `migrate` is called.
final class SourceGuest: @unchecked Sendable {
    let path: String
    let region: MappedRegion
    let guest: Guest
    let agent: SourceAgent

    /// The image is `<file ?? name>.src` in `scratch`.
    init(
        scratch: Scratch, name: String, file: String? = nil, port: UInt16, size: Int = 16 << 20,
        workload: String = "uniform:5MB/s", seed: UInt64, maxBandwidth: Double? = nil,
        adjust: ((inout SourceOptions) -> Void)? = nil
    ) throws {
        path = scratch.file((file ?? name) + ".src")
        try ImageGenerator.create(
            path: path, size: size, mix: .standard, seed: seed, pageSize: systemPageSize, overwrite: true)
        region = try MappedRegion.mapFile(path: path, writable: true)
        let setup = try GuestSetup.make(
            workload: workload, vcpus: 1, seed: seed, pageSize: systemPageSize, pageCount: size / systemPageSize)
        guest = try Guest(memory: region.base, size: size, configuration: setup.configuration, logger: testLogger)
        guest.start()
        var options = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(port)"),
            settings: ConvergenceSettings(downtimeTarget: .seconds(0.05), maxRounds: 30, timeout: .seconds(60)),
            guestName: name, replyTimeout: .milliseconds(20_000), maxBandwidth: maxBandwidth, streams: 2)
        adjust?(&options)
        agent = SourceAgent(
            memory: region.base, size: size, imagePath: path, guest: guest, guestSetup: setup,
            options: options, logger: testLogger)
    }

    /// Migrates; on failure stops the guest (after checking it still runs) and rethrows.
    func migrate() throws -> MigrationReport {
        do {
            let report = try agent.migrate()
            try region.sync()
            return report
        } catch {
            _ = guest.stop()
            throw error
        }
    }

    /// Whether the guest still makes progress (it must after a refusal).
    func isRunning() -> Bool {
        let before = guest.totalSteps
        Thread.sleep(forTimeInterval: 0.05)
        return guest.totalSteps > before
    }
}

func filesAreIdentical(_ a: String, _ b: String) throws -> Bool {
    try Data(contentsOf: URL(fileURLWithPath: a)) == Data(contentsOf: URL(fileURLWithPath: b))
}

@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct DestinationServerTests {
    func server(_ scratch: Scratch, maxSessions: Int) throws -> (DestinationServer, UInt16) {
        try FileManager.default.createDirectory(atPath: scratch.file("guests"), withIntermediateDirectories: true)
        let server = DestinationServer(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: "", runFor: .seconds(0),
                receiveTimeout: .milliseconds(20_000)),
            directory: scratch.file("guests"), maxSessions: maxSessions, logger: testLogger)
        return (server, try server.bind())
    }

    /// One destination receives four running guests at once, each into its own image, every one
    /// verified and byte-identical with its source; then a fifth beyond the limit is refused as
    /// busy while four run, and its guest keeps running.
    @Test func fourGuestsAtOnceAndAFifthIsRefused() throws {
        let scratch = Scratch()
        let (server, port) = try server(scratch, maxSessions: 4)
        let serving = BackgroundThread { try server.run(count: 4) }
        // Limited bandwidth keeps the four busy long enough for the fifth to find them running.
        let sources = try (0..<4).map {
            try SourceGuest(scratch: scratch, name: "vm\($0)", port: port, seed: UInt64(10 + $0), maxBandwidth: 8e6)
        }
        let runs = sources.map { source in BackgroundThread { try source.migrate() } }
        Thread.sleep(forTimeInterval: 0.25)
        #expect(server.activeCount == 4, "four migrations should be running")
        let fifth = try SourceGuest(scratch: scratch, name: "vm4", port: port, seed: 20)
        let refusal = #expect(throws: MigrationError.self) { _ = try fifth.agent.migrate() }
        #expect(refusal?.code == .refused)
        #expect(refusal?.message.contains("busy") == true, "\(refusal?.message ?? "")")
        #expect(fifth.isRunning(), "a refused source keeps its guest running")
        _ = fifth.guest.stop()

        for (index, run) in runs.enumerated() {
            let report = try run.wait()
            #expect(report.verified && report.guestLocation == .destination, "vm\(index)")
        }
        let outcomes = try serving.wait()
        #expect(Set(outcomes.map(\.guestName)) == ["vm0", "vm1", "vm2", "vm3"])
        for outcome in outcomes {
            let result = try outcome.result.get()
            #expect(result.report.verified)
            #expect(
                try filesAreIdentical(outcome.imagePath, scratch.file(outcome.guestName + ".src")),
                "\(outcome.guestName): destination image differs from its source (cross-talk?)")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.file("guests/vm4.img")))
    }

    /// A serving destination needs a guest name, and one guest is received once at a time.
    @Test func namelessOrDuplicateGuestsAreRefused() throws {
        let scratch = Scratch()
        let (server, port) = try server(scratch, maxSessions: 4)
        let serving = BackgroundThread { try server.run(count: 1) }
        let nameless = try SourceGuest(scratch: scratch, name: "", file: "nameless", port: port, seed: 1)
        let error = #expect(throws: MigrationError.self) { _ = try nameless.agent.migrate() }
        #expect(error?.code == .refused && error?.message.contains("--name") == true, "\(error?.message ?? "")")
        _ = nameless.guest.stop()

        let first = try SourceGuest(scratch: scratch, name: "same", port: port, seed: 2, maxBandwidth: 8e6)
        let firstRun = BackgroundThread { try first.migrate() }
        Thread.sleep(forTimeInterval: 0.2)
        let twin = try SourceGuest(scratch: scratch, name: "same", file: "twin", port: port, seed: 3)
        let duplicate = #expect(throws: MigrationError.self) { _ = try twin.agent.migrate() }
        #expect(duplicate?.message.contains("already") == true, "\(duplicate?.message ?? "")")
        _ = twin.guest.stop()
        #expect(try firstRun.wait().verified)
        _ = try serving.wait()
        #expect(try filesAreIdentical(scratch.file("guests/same.img"), scratch.file("same.src")))
    }

    /// A single-guest destination refuses a second source as busy and closes strangers, and the
    /// migration in progress is not disturbed by either.
    @Test func singleGuestDestinationIsNotDisturbedByOthers() throws {
        let scratch = Scratch()
        let destination = DestinationAgent(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: scratch.file("one.img"),
                runFor: .seconds(0), acceptTimeout: .milliseconds(20_000), receiveTimeout: .milliseconds(20_000)),
            logger: testLogger)
        let port = try destination.bind()
        let receiving = BackgroundThread { try destination.run() }
        let first = try SourceGuest(scratch: scratch, name: "one", port: port, seed: 5, maxBandwidth: 8e6)
        let firstRun = BackgroundThread { try first.migrate() }
        Thread.sleep(forTimeInterval: 0.2)

        // A stranger that sends garbage, and one that connects and says nothing.
        let garbage = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: port), timeoutMs: 2000)
        try [UInt8](repeating: 0x41, count: 64).withUnsafeBytes { try garbage.writeAll($0) }
        let silent = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: port), timeoutMs: 2000)
        // A second source.
        let second = try SourceGuest(scratch: scratch, name: "two", port: port, seed: 6)
        let refusal = #expect(throws: MigrationError.self) { _ = try second.agent.migrate() }
        #expect(refusal?.code == .refused && refusal?.message.contains("busy") == true, "\(refusal?.message ?? "")")
        #expect(second.isRunning())
        _ = second.guest.stop()

        #expect(try firstRun.wait().verified)
        let result = try receiving.wait()
        #expect(result.report.verified)
        #expect(try filesAreIdentical(scratch.file("one.img"), scratch.file("one.src")))
        garbage.close()
        silent.close()
    }
}

@Suite struct SingleMigrationTests {
    /// Without a timeout `wait` waits for the established session's result (it must not trap on
    /// an endless deadline); one session holds the claim at a time, none after the result.
    @Test func waitWithoutATimeoutWaitsForTheResult() throws {
        let single = SingleMigration()
        let waiter = BackgroundThread { single.wait(timeoutMs: nil).map { (try? $0.get()) == nil } }
        Thread.sleep(forTimeInterval: 0.05)
        #expect(single.claim() == nil)
        #expect(single.claim() != nil, "one session at a time")
        single.finish(.failure(MigrationError(.refused, "test", guest: .notHere)))
        #expect(try waiter.wait() == true)
        #expect(single.claim() != nil, "no claim after the result")
    }

    /// The accept timeout ends the wait only while no session holds the claim.
    @Test func acceptTimeoutEndsOnlyAnUnclaimedWait() throws {
        let single = SingleMigration()
        #expect(single.claim() == nil)
        let waiter = BackgroundThread { single.wait(timeoutMs: 50) != nil }
        Thread.sleep(forTimeInterval: 0.3)
        single.finish(.failure(MigrationError(.refused, "test", guest: .notHere)))
        #expect(try waiter.wait(), "a claimed migration is waited for past the accept timeout")

        let idle = SingleMigration()
        #expect(idle.claim() == nil)
        idle.release()
        #expect(idle.wait(timeoutMs: 20) == nil)
        #expect(idle.claim() != nil, "no claim after the accept timeout")
    }
}
