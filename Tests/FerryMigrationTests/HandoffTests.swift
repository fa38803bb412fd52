import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Synchronization
import Testing

@testable import FerryMigration

/// The handoff around COMMIT when one of its frames is lost (Protocol.md section 6): the guest
/// ends up running in exactly one place, and the source knows which.
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct HandoffTests {
    /// A migration whose frames pass through a frame `Relay` that cuts the first frame of `type`.
    private func migrate(
        cutting type: FrameType, going direction: Relay.Direction, in scratch: Scratch,
        adjust: (inout LoopbackMigration) -> Void = { _ in }
    ) throws -> (LoopbackMigration.Outcome, Relay?) {
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        let relay = migration.cutFirst(type, going: direction)
        adjust(&migration)
        let outcome = try migration.run(in: scratch)
        relay.value?.stop()
        return (outcome, relay.value)
    }

    /// COMMIT lost on its way: the destination keeps the verified image and waits; the source
    /// comes back, learns `awaiting-commit`, sends COMMIT again, and the guest runs there, once.
    @Test func lostCommitIsDeliveredAgain() throws {
        let scratch = Scratch()
        let (outcome, relay) = try migrate(cutting: .commit, going: .toDestination, in: scratch)
        #expect(relay?.cuts == ["toDestination 11"])
        let report = try outcome.source.get()
        #expect(report.guestLocation == .destination)
        #expect(report.handoff?.contains("first COMMIT was lost") == true, "\(report.handoff ?? "nil")")
        let destination = try outcome.destination.get()
        #expect(destination.report.guestLocation == .destination)
        #expect(destination.finalStates.map(\.step) == report.vcpuSteps)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// RESUMED lost on its way back: the source asks, hears `resumed`, and does not resume its
    /// paused guest.
    @Test func lostResumedIsConfirmedByStatus() throws {
        let scratch = Scratch()
        let (outcome, _) = try migrate(cutting: .resumed, going: .toSource, in: scratch)
        let report = try outcome.source.get()
        #expect(report.guestLocation == .destination)
        #expect(report.handoff?.contains("RESUMED was lost") == true, "\(report.handoff ?? "nil")")
        let destination = try outcome.destination.get()
        #expect(destination.finalStates.map(\.step) == report.vcpuSteps)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// VERIFIED lost: the source never wrote COMMIT, so it keeps the guest and tells the
    /// destination, which discards its verified image at once (not after its handoff timeout).
    @Test func lostVerifiedKeepsTheGuestOnTheSource() throws {
        let scratch = Scratch()
        let started = MonotonicClock.now()
        let (outcome, _) = try migrate(cutting: .verified, going: .toSource, in: scratch)
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.guest == .source)
        #expect(outcome.guestWasRunningAfterFailure)
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(destinationError.guest == .notHere)
        #expect(destinationError.code == .peerAborted, "\(destinationError)")
        #expect(MonotonicClock.seconds(since: started) < 30, "the destination waited for its handoff timeout")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
    }

    /// The connection fails in the blackout before CPU_STATE arrives: the destination would wait
    /// for a RESUME that never comes (the source does not resume a blackout); the source resumes
    /// its guest and tells it so, and it discards at once instead of after its grace period.
    @Test func blackoutLossIsReleasedAtOnce() throws {
        let scratch = Scratch()
        let started = MonotonicClock.now()
        let (outcome, _) = try migrate(cutting: .deviceState, going: .toDestination, in: scratch)
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.guest == .source)
        #expect(outcome.guestWasRunningAfterFailure)
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(destinationError.code == .peerAborted, "\(destinationError)")
        #expect(MonotonicClock.seconds(since: started) < 15, "the destination waited for its resume grace period")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
    }

    /// COMMIT lost and the network stays down: the source reports the outcome as unresolved and
    /// does not resume its paused guest (it might run there); the destination, hearing nothing,
    /// discards after its handoff timeout. No protocol can settle this case alone; both sides say
    /// what they know, and the source names the `ferry status` command to ask with.
    @Test func unreachableDestinationLeavesTheOutcomeUnresolved() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        migration.sourceHandoffTimeoutMs = 1_000
        migration.destinationHandoffTimeoutMs = 2_500
        migration.route = { port in
            try Relay(
                to: port, options: Relay.Options(halfClose: true, afterCut: .stopListening),
                onFrame: Relay.cutFirst(.commit, going: .toDestination)
            ).port
        }
        let outcome = try migration.run(in: scratch)
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.guest == .handedOverUnconfirmed)
        #expect(error.message.contains("ferry status --connect"), "\(error)")
        #expect(!outcome.guestWasRunningAfterFailure, "a source must not resume a guest it committed")
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(destinationError.guest == .notHere)
        #expect(destinationError.message.contains("did not come back"), "\(destinationError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
    }

    /// The same partition, but the source is known to be gone for good: an operator decides in
    /// its place (what `ferry status --session ID --commit` sends), and the verified guest resumes
    /// on the destination instead of being discarded.
    @Test func anOperatorCanCommitForASourceThatIsGone() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        migration.sourceHandoffTimeoutMs = 500
        migration.route = { port in
            try Relay(
                to: port, options: Relay.Options(halfClose: true, afterCut: .stopListening),
                onFrame: Relay.cutFirst(.commit, going: .toDestination)
            ).port
        }
        var session: UInt64 = 0
        let lastSourceError = Mutex<String>("")
        migration.afterSource = { port in
            let endpoint = try Endpoint.parse("127.0.0.1:\(port)")
            // The operator reads the session and its token from the source's report (here, the
            // `ferry status` command its error suggests): a stranger's query would not name it.
            let (asking, answers) = try StatusClient.ask(endpoint, StatusQuery(resolve: false))
            asking.close()
            #expect(answers.first { $0.state == .awaitingCommit }?.sessionID == 0)
            let token = try #require(SourceReports.token(in: lastSourceError.withLock { $0 }))
            session = try #require(SourceReports.session(in: lastSourceError.withLock { $0 }))
            let (deciding, decided) = try StatusClient.ask(
                endpoint, StatusQuery(sessionID: session, sessionToken: token, resolve: true))
            defer { deciding.close() }
            #expect(decided.first?.state == .awaitingCommit)
            try deciding.send(Commit())
            _ = try deciding.receive(Resumed.self)
            try deciding.send(Done())
        }
        migration.afterSourceResult = { result in
            if case .failure(let error) = result { lastSourceError.withLock { $0 = "\(error)" } }
        }
        let outcome = try migration.run(in: scratch)
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.guest == .handedOverUnconfirmed)
        #expect(error.message.contains("--token "), "\(error)")
        let destination = try outcome.destination.get()
        #expect(destination.report.guestLocation == .destination)
        #expect(destination.report.session == hex(session))
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// `STATUS` over a real connection: a finished migration is `resumed` with its digest, a
    /// session nobody knows is `unknown`, and a guest name filters.
    @Test func statusAnswersForFinishedAndUnknownSessions() throws {
        let scratch = Scratch()
        let size = 16 << 20
        try ImageGenerator.create(
            path: scratch.file("g.img"), size: size, mix: .standard, seed: 5, pageSize: systemPageSize, overwrite: true)
        let server = DestinationServer(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: "", receiveTimeout: .milliseconds(20_000)),
            directory: scratch.path, maxSessions: 2, logger: testLogger)
        let port = try server.bind()
        // The server stops after its one migration; holding its `finished` callback keeps it
        // answering until the queries are done.
        let hold = DispatchSemaphore(value: 0)
        let serving = BackgroundThread { try server.run(count: 1) { _ in hold.wait() } }
        let endpoint = try Endpoint.parse("127.0.0.1:\(port)")

        let region = try MappedRegion.mapFile(path: scratch.file("g.img"), writable: true)
        let setup = try GuestSetup.make(
            workload: "idle", vcpus: 1, seed: 1, pageSize: systemPageSize, pageCount: size / systemPageSize)
        let guest = try Guest(memory: region.base, size: size, configuration: setup.configuration, logger: testLogger)
        guest.start()
        let agent = SourceAgent(
            memory: region.base, size: size, imagePath: scratch.file("g.img"), guest: guest, guestSetup: setup,
            options: SourceOptions(destination: endpoint, guestName: "web-1"), logger: testLogger)
        let report = try agent.migrate()
        let session = try #require(report.session.flatMap { UInt64($0, radix: 16) })
        let token = try #require(report.sessionToken.flatMap(SessionToken.init(hex:)))

        let (byID, mine) = try StatusClient.ask(endpoint, StatusQuery(sessionID: session, sessionToken: token))
        byID.close()
        #expect(mine.count == 1)
        #expect(mine.first?.state == .resumed)
        #expect(mine.first?.guestName == "web-1")
        #expect(mine.first.map { hex($0.digest) } == report.digest)

        let (byName, named) = try StatusClient.ask(endpoint, StatusQuery(sessionToken: token, guestName: "web-1"))
        byName.close()
        #expect(named.map(\.sessionID) == [session])

        // Without the token: the state, but no id (unless asked by id) and no digest.
        let (strangerByID, told) = try StatusClient.ask(endpoint, StatusQuery(sessionID: session))
        strangerByID.close()
        #expect(told.first?.state == .resumed && told.first?.sessionID == session && told.first?.digest == 0)
        let (strangerByName, hidden) = try StatusClient.ask(endpoint, StatusQuery(guestName: "web-1"))
        strangerByName.close()
        #expect(hidden.map(\.sessionID) == [0] && hidden.map(\.digest) == [0] && hidden.first?.state == .resumed)

        let (other, unknown) = try StatusClient.ask(endpoint, StatusQuery(sessionID: session ^ 1, resolve: true))
        other.close()
        #expect(unknown.count == 1)
        #expect(unknown.first?.state == .unknown)
        hold.signal()
        _ = try serving.wait()
    }
}
