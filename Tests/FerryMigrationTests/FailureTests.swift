import FerryCodec
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

@Suite(.serialized) struct FailureTests {
    /// The destination refuses (its image appeared and --force was not given): the source guest
    /// keeps running, the destination's file is untouched, no partial image is left. The refusal
    /// does not end the one-shot destination: it waits on for a source it can take until its
    /// accept timeout (issue 11, finding 7).
    @Test func refusalLeavesSourceRunningAndDestinationUntouched() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.acceptTimeoutMs = 3_000
        let marker = [UInt8](repeating: 0xA5, count: 4096)
        let outcome = try migration.run(in: scratch) { path in
            try Data(marker).write(to: URL(fileURLWithPath: path))
        }
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.code == .refused)
        #expect(error.guest == .source)
        #expect(error.message.contains("--force"))
        #expect(outcome.guestWasRunningAfterFailure)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("destination.img"))) == Data(marker))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(
            destinationError.code == .transport && destinationError.message.contains("established"),
            "\(destinationError.message)")
    }

    /// Pre-copy that cannot meet the target gives up: the guest keeps running on the source and its
    /// image is exactly what a guest that never tried to migrate would have written.
    @Test func notConvergedLeavesSourceGuestUntouched() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:80MB/s"
        migration.settings = ConvergenceSettings(
            downtimeTarget: .seconds(0.000_001), maxRounds: 3, timeout: .seconds(60), autoConverge: false)
        let outcome = try migration.run(in: scratch)
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.code == .notConverged)
        #expect(error.guest == .source)
        #expect(error.message.contains("--max-rounds 3"))
        #expect(outcome.guestWasRunningAfterFailure)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(destinationError.code == .peerAborted)
        // Both agents keep the report as far as the migration got, the failure recorded in it.
        let sourceReport = try #require(outcome.sourceReport)
        #expect(sourceReport.outcome == .notConverged && sourceReport.guestLocation == .source)
        #expect(sourceReport.error?.code == "not_converged" && sourceReport.error?.exitCode == nil)
        #expect(sourceReport.rounds == 3 && sourceReport.perRound.count == 3 && sourceReport.wireBytes > 0)
        #expect(sourceReport.finishedAt != nil && sourceReport.totalMs > 0)
        let destinationReport = try #require(outcome.destinationReport)
        #expect(destinationReport.outcome == .aborted && destinationReport.guestLocation == .notHere)
        #expect(destinationReport.error?.code == "peer_aborted" && !destinationReport.perRound.isEmpty)
        try Transparency.runReference(
            imagePath: scratch.file("reference.img"), setup: outcome.setup,
            steps: outcome.sourceStepsAtEnd, logger: testLogger)
        #expect(
            try Transparency.difference(between: scratch.file("source.img"), and: scratch.file("reference.img")) == nil)
    }

    /// --force-switchover finishes anyway, still verified and transparent.
    @Test func forcedSwitchoverStillVerifies() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:80MB/s"
        migration.settings = ConvergenceSettings(
            downtimeTarget: .seconds(0.000_001), maxRounds: 2, timeout: .seconds(60), forceSwitchover: true)
        migration.runFor = 0
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.rounds == 3)
        #expect(report.verified)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// A destination that vanishes in the middle of round 0: the source says so and its guest runs on.
    @Test func vanishingDestinationLeavesSourceRunning() throws {
        let scratch = Scratch()
        let size = 32 << 20
        try ImageGenerator.create(
            path: scratch.file("source.img"), size: size, mix: .standard, seed: 3,
            pageSize: systemPageSize, overwrite: true)
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        let port = listener.port
        let fake = BackgroundThread { () throws -> Int in
            let stream = try listener.accept(timeoutMs: 10_000)
            let connection = FramedConnection(stream)
            _ = try connection.receive(Hello.self)
            try connection.send(
                Accept(
                    version: ProtocolLimits.version, codecs: [.zero, .raw, .lz4], memoryAvailable: 1 << 40,
                    diskAvailable: 1 << 40, sessionToken: .random(), destinationName: "vanishing"))
            _ = try connection.receive(GuestConfig.self)
            var batches = 0
            while batches < 2 {
                let frame = try connection.receive()
                if frame.type == .pageBatch { batches += 1 }
            }
            connection.close()
            listener.close()
            return batches
        }
        let region = try MappedRegion.mapFile(path: scratch.file("source.img"), writable: true)
        let setup = try GuestSetup.make(
            workload: "uniform:20MB/s", vcpus: 2, seed: 1, pageSize: systemPageSize,
            pageCount: size / systemPageSize)
        let guest = try Guest(memory: region.base, size: size, configuration: setup.configuration, logger: testLogger)
        guest.start()
        defer { _ = guest.stop() }
        let agent = SourceAgent(
            memory: region.base, size: size, imagePath: scratch.file("source.img"), guest: guest,
            guestSetup: setup,
            options: SourceOptions(
                destination: try Endpoint.parse("127.0.0.1:\(port)"),
                batchBytes: 256 << 10, replyTimeout: .milliseconds(5_000),
                reconnectAttempts: 2, reconnectBackoff: .seconds(0.05)),
            logger: testLogger)
        let result = Result { try agent.migrate() }
        let error = try #require(result.failure as? MigrationError)
        #expect(error.guest == .source)
        #expect([.transport, .peerAborted].contains(error.code))
        #expect(
            error.code != .transport || error.message.contains("could not resume in 2 attempt(s)"), "\(error.message)")
        #expect(try fake.wait() == 2)
        let before = guest.totalSteps
        Thread.sleep(forTimeInterval: 0.1)
        #expect(guest.totalSteps > before, "the source guest must keep running")
        #expect(guest.throttlePercent == 0)
    }

}

@Suite struct StripeTests {
    @Test func pagesAreStripedInBlocksOf512() {
        let stripes = PageStripes(streamCount: 3)
        #expect([0, 511, 512, 1023, 1024, 1536, 1537].map(stripes.stream(of:)) == [0, 0, 1, 1, 2, 0, 0])
        var bitmap = DirtyBitmap(count: 5000)
        for page in [0, 7, 511, 512, 600, 1100, 1600, 4999] { bitmap.set(page) }
        var seen: [[Int]] = [[], [], []]
        for stream in 0..<3 { stripes.forEachPage(in: bitmap, of: stream) { seen[stream].append($0) } }
        #expect(seen == [[0, 7, 511, 1600, 4999], [512, 600], [1100]])  // 4999 is in stripe 9, on stream 0
        #expect((0..<3).map { stripes.count(in: bitmap, of: $0) } == [5, 2, 1])
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

/// The report's JSON form is the library's: a plain `JSONEncoder` gives the documented keys
/// (docs/json-report.md), units in their names, and it decodes back.
@Suite struct ReportEncodingTests {
    @Test func plainEncoderGivesTheDocumentedKeys() throws {
        var report = MigrationReport(
            role: "source", image: "vm.img", imageBytes: 8192, pageSize: 4096, vcpus: 1, workload: "idle")
        report.perRound = [
            RoundRecord(
                round: 0, pages: 2, wireBytes: 100, durationMs: 1.5, sendRateMBps: 200, dirtyPages: 1,
                dirtyRateMBps: 30, predictedDowntimeMs: 2, throttlePercent: 0, decision: "switch over")
        ]
        report.recordFailure(MigrationError(.notConverged, "gave up", guest: .source))
        let data = try JSONEncoder().encode(report)
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(json["schema_version"] as? Int == MigrationReport.currentSchemaVersion)
        #expect(json["outcome"] as? String == "not_converged")
        #expect(json["guest"] as? String == "source")
        #expect(json["page_size_bytes"] as? Int == 4096 && json["image_bytes"] as? Int == 8192)
        #expect((json["error"] as? [String: Any])?["code"] as? String == "not_converged")
        #expect((json["started_at"] as? String)?.hasSuffix("Z") == true)
        let round = try #require((json["per_round"] as? [[String: Any]])?.first)
        #expect(round["send_mb_per_s"] as? Double == 200 && round["dirty_mb_per_s"] as? Double == 30)
        #expect(
            Set(round.keys).isSubset(of: [
                "round", "pages", "wire_bytes", "duration_ms", "send_mb_per_s", "dirty_pages", "dirty_mb_per_s",
                "predicted_downtime_ms", "throttle_percent", "decision", "sending_ms",
            ]))
        let decoded = try JSONDecoder().decode(MigrationReport.self, from: data)
        #expect(decoded.outcome == .notConverged && decoded.perRound == report.perRound)
        #expect(
            abs(decoded.startedAt!.date.timeIntervalSince(report.startedAt!.date)) < 0.001,
            "timestamps keep their milliseconds")
    }

    @Test func outcomeOfEachFailure() {
        let cases: [(MigrationError.Code, GuestLocation, MigrationOutcome)] = [
            (.refused, .source, .refused), (.notConverged, .source, .notConverged), (.peerAborted, .notHere, .aborted),
            (.transport, .source, .failed), (.transport, .handedOverUnconfirmed, .unresolved),
            (.verification, .source, .failed),
        ]
        for (code, guest, outcome) in cases {
            #expect(MigrationOutcome(failure: MigrationError(code, "x", guest: guest)) == outcome, "\(code) \(guest)")
        }
    }
}
