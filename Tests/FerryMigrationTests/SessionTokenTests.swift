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

/// A third party that can reach a destination without a key (issue 11, findings 1 and 3): it may
/// ask where migrations stand, but it cannot learn their session ids, and knowing an id is not
/// enough to resolve, commit, abort, resume or join a migration: each needs the session token
/// that only the source got (Protocol.md section 6). Real agents, real sockets; the stranger is
/// a plain client of the wire protocol, and a frame `Relay` between the agents gives it its
/// moment (a frame held while it acts) and, in the tests that say so, the session id (which a
/// real stranger would have to guess).
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct SessionTokenTests {
    /// What the relay saw in the destination's `ACCEPT`.
    final class Seen: Sendable {
        let accept = Mutex<(id: UInt64, token: SessionToken)?>(nil)
        var id: UInt64 { accept.withLock { $0?.id ?? 0 } }
        var token: SessionToken { accept.withLock { $0?.token ?? .none } }

        /// A relay hook that records the ACCEPT going to the source, then runs `then` (before the
        /// ACCEPT is forwarded).
        func recordAccept(then: (@Sendable (Seen) -> Void)? = nil) -> @Sendable (inout Relay.Frame) -> Void {
            { [self] frame in
                guard frame.direction == .toSource, frame.type == FrameType.accept.rawValue,
                    let accept = frame.withPayload({ try? Accept(payload: UnsafeRawBufferPointer($0)) })
                else { return }
                self.accept.withLock { $0 = (accept.sessionID, accept.sessionToken) }
                then?(self)
            }
        }
    }

    /// A token that is not the session's.
    static let wrongToken = SessionToken(low: 0x5752_4F4E_4721, high: 0x746F_6B65_6E21)

    /// A stranger's connection straight to the destination (not through the relay).
    static func stranger(_ port: UInt16) throws -> FramedConnection {
        let stream = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: port), timeoutMs: 2_000)
        try stream.setReceiveTimeout(ms: 3_000)
        return FramedConnection(stream)
    }

    /// The destination closed `connection` without an answer (not a timeout: it did not keep it).
    static func expectClosedWithoutAnswer(_ connection: FramedConnection, _ what: String) {
        let error = #expect(throws: TransportError.self, "\(what)") { _ = try connection.receive() }
        #expect(error?.code == .peerClosed, "\(what): \(error?.message ?? "")")
        connection.close()
    }

    /// A stranger who knows session `id` (but not its token) tries to decide it: a resolve query
    /// without a token and one with a wrong token, each followed by `decision`. Each is answered
    /// as a plain query (the state, the id it named, digest 0) and closed; `decision` gets nothing
    /// back. Returns the states it was told.
    static func strangerTriesToDecide(_ id: UInt64, port: UInt16, with decision: any FrameMessage) throws
        -> [HandoffState]
    {
        var states: [HandoffState] = []
        for token in [SessionToken.none, wrongToken] {
            let (connection, answers) = try StatusClient.ask(
                Endpoint(host: "127.0.0.1", port: port),
                StatusQuery(sessionID: id, sessionToken: token, resolve: true),
                replyTimeout: .milliseconds(3_000))
            #expect(answers.count == 1)
            #expect(answers.first?.sessionID == id && answers.first?.digest == 0, "\(answers)")
            states.append(answers.first?.state ?? .unknown)
            try? connection.send(decision)
            expectClosedWithoutAnswer(connection, "\(type(of: decision)) after a resolve query with token \(token)")
        }
        return states
    }

    /// Finding 1's first step: a stranger's unfiltered `STATUS_QUERY` during a migration tells the
    /// state but session id 0 and digest 0; the source, presenting its token, gets the id.
    @Test func strangersDoNotLearnSessionIDs() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        let seen = Seen()
        let strangerView = Mutex<[Status]>([])
        let holderView = Mutex<[Status]>([])
        migration.route = { port in
            try Relay.frames(to: port, rewrite: seen.recordAccept()) { direction, type in
                // While the first ROUND_ACK is held, the migration is surely in progress.
                if direction == .toSource, type == FrameType.roundAck.rawValue, strangerView.withLock({ $0.isEmpty }) {
                    let endpoint = Endpoint(host: "127.0.0.1", port: port)
                    if let (asking, answers) = try? StatusClient.ask(endpoint, StatusQuery()) {
                        asking.close()
                        strangerView.withLock { $0 = answers }
                    }
                    if let (asking, answers) = try? StatusClient.ask(endpoint, StatusQuery(sessionToken: seen.token)) {
                        asking.close()
                        holderView.withLock { $0 = answers }
                    }
                }
                return .forward
            }.port
        }
        let outcome = try migration.run(in: scratch)
        #expect(try outcome.source.get().guestLocation == .destination)
        let stranger = strangerView.withLock { $0 }
        let holder = holderView.withLock { $0 }
        #expect(stranger.count == 1 && stranger.first?.state == .receiving, "\(stranger)")
        #expect(stranger.first?.sessionID == 0 && stranger.first?.digest == 0, "\(stranger)")
        #expect(holder.first?.sessionID == seen.id && seen.id != 0, "\(holder)")
    }

    /// A connection that proved the shared key is trusted with session ids, token or not.
    @Test func keyHoldersSeeSessionIDs() throws {
        let scratch = Scratch()
        let key = SharedKey.random()
        var migration = LoopbackMigration()
        migration.size = 8 << 20
        migration.sourceSecurity = ConnectionSecurity(key: key)
        migration.destinationSecurity = ConnectionSecurity(key: key)
        let view = Mutex<[Status]>([])
        migration.runFor = 1
        migration.afterSource = { port in
            let (asking, answers) = try StatusClient.ask(
                Endpoint(host: "127.0.0.1", port: port), StatusQuery(),
                security: ConnectionSecurity(key: key))
            asking.close()
            view.withLock { $0 = answers }
        }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let answers = view.withLock { $0 }
        #expect(answers.first.map { hex($0.sessionID) } == report.session, "\(answers)")
        #expect(answers.first.map { hex($0.digest) } == report.digest, "\(answers)")
    }

    /// Finding 1 (split brain without a key): `VERIFIED` is lost on its way to the source, which
    /// therefore resumes its own guest. Meanwhile a stranger who knows the session id sends a
    /// resolve `STATUS_QUERY` without the token, then `COMMIT` (and again with a wrong token).
    /// Before version 4 the destination resumed the guest: it ran in two places. Now the stranger
    /// is answered as a plain asker and closed, the destination keeps waiting for the real source,
    /// whose release (with its token) makes it discard: the guest runs on the source only.
    @Test func aStrangersCommitAfterALostVerifiedResumesNothing() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        let seen = Seen()
        let told = Mutex<[HandoffState]>([])
        let unfiltered = Mutex<[Status]>([])
        migration.route = { port in
            // The first VERIFIED going to the source is cut.
            let cutDone = Atomic<Bool>(false)
            return try Relay.frames(to: port, rewrite: seen.recordAccept()) { direction, type in
                let verdict: Relay.Verdict =
                    direction == .toSource && type == FrameType.verified.rawValue
                        && !cutDone.exchange(true, ordering: .relaxed) ? .cut : .forward
                if verdict == .cut {
                    // The destination has sent VERIFIED ok: it awaits a COMMIT.
                    if let (asking, answers) = try? StatusClient.ask(
                        Endpoint(host: "127.0.0.1", port: port), StatusQuery())
                    {
                        asking.close()
                        unfiltered.withLock { $0 = answers }
                    }
                    if let states = try? Self.strangerTriesToDecide(seen.id, port: port, with: Commit()) {
                        told.withLock { $0 = states }
                    }
                }
                return verdict
            }.port
        }
        let outcome = try migration.run(in: scratch)
        #expect(unfiltered.withLock { $0.map(\.sessionID) } == [0], "the unfiltered answer named the session")
        #expect(told.withLock { $0 } == [.awaitingCommit, .awaitingCommit])
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.guest == .source, "\(error)")
        #expect(outcome.guestWasRunningAfterFailure, "the source's guest must keep running")
        let destinationError = try #require(
            outcome.destination.failure as? MigrationError, "the destination resumed the guest: split brain")
        #expect(destinationError.guest == .notHere)
        #expect(destinationError.code == .peerAborted, "\(destinationError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
    }

    /// Finding 3 (a stranger aborts any migration): during pre-copy a stranger who knows the
    /// session id sends a resolve `STATUS_QUERY` and `ABORT`, without and with a wrong token.
    /// Nothing happens to the migration: no connection of it is closed (no resume), and it
    /// completes.
    @Test func aStrangersAbortDuringPrecopyDoesNothing() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        let seen = Seen()
        let told = Mutex<[HandoffState]>([])
        migration.route = { port in
            try Relay.frames(to: port, rewrite: seen.recordAccept()) { direction, type in
                if direction == .toSource, type == FrameType.roundAck.rawValue, told.withLock({ $0.isEmpty }),
                    let states = try? Self.strangerTriesToDecide(
                        seen.id, port: port, with: Abort(reason: .cancelled, message: "a stranger"))
                {
                    told.withLock { $0 = states }
                }
                return .forward
            }.port
        }
        let outcome = try migration.run(in: scratch)
        #expect(told.withLock { $0 } == [.receiving, .receiving])
        let report = try outcome.source.get()
        #expect(report.guestLocation == .destination)
        #expect(report.resumes == 0, "the stranger's query closed the migration's connections")
        let destination = try outcome.destination.get()
        #expect(destination.report.guestLocation == .destination)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// A stranger's `JOIN` (before the source's own, right after ACCEPT, and again during
    /// pre-copy) and `RESUME` carrying the right session id and a wrong token are closed without
    /// an answer; the migration neither loses a stream nor resumes, and completes.
    @Test func aStrangersJoinAndResumeAreClosed() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        migration.adjustSource = { $0.streams = 2 }
        let seen = Seen()
        let tried = Mutex<Int>(0)
        let pageCount = UInt64(migration.size / systemPageSize)
        migration.route = { port in
            // Before the source's JOIN can arrive (the ACCEPT is held): the stream slot is free.
            let joinFirst = seen.recordAccept { seen in
                guard let connection = try? Self.stranger(port) else { return }
                try? connection.send(Join(sessionID: seen.id, sessionToken: Self.wrongToken, streamIndex: 1))
                Self.expectClosedWithoutAnswer(connection, "JOIN right after ACCEPT")
                tried.withLock { $0 += 1 }
            }
            return try Relay.frames(to: port, rewrite: joinFirst) { direction, type in
                if direction == .toSource, type == FrameType.roundAck.rawValue, tried.withLock({ $0 == 1 }) {
                    if let connection = try? Self.stranger(port) {
                        try? connection.send(
                            Resume(sessionID: seen.id, sessionToken: Self.wrongToken, pageCount: pageCount, round: 0))
                        Self.expectClosedWithoutAnswer(connection, "RESUME during pre-copy")
                    }
                    if let connection = try? Self.stranger(port) {
                        try? connection.send(Join(sessionID: seen.id, sessionToken: Self.wrongToken, streamIndex: 1))
                        Self.expectClosedWithoutAnswer(connection, "JOIN during pre-copy")
                    }
                    tried.withLock { $0 += 1 }
                }
                return .forward
            }.port
        }
        let outcome = try migration.run(in: scratch)
        #expect(tried.withLock { $0 } == 2)
        let report = try outcome.source.get()
        #expect(report.guestLocation == .destination)
        #expect(report.resumes == 0, "the stranger's RESUME dropped the migration's connections")
        let destination = try outcome.destination.get()
        #expect(destination.report.resumes == 0)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// Version 6 only: a source that offers only version 5 (no GUEST_ATTACHMENT) is refused with reason `version`, and
    /// the message names both versions.
    @Test func aVersion5SourceIsRefused() throws {
        let scratch = Scratch()
        let destination = DestinationAgent(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: scratch.file("g.img"),
                acceptTimeout: .milliseconds(5_000), receiveTimeout: .milliseconds(5_000)),
            logger: testLogger)
        let port = try destination.bind()
        let receiving = BackgroundThread { try destination.run() }
        let connection = try Self.stranger(port)
        defer { connection.close() }
        try connection.send(
            Hello(
                versionMin: 5, versionMax: 5, pageSize: UInt32(systemPageSize), pageCount: 16, vcpuCount: 1,
                sourceName: "old"))
        let refusal = try connection.receive(Refuse.self)
        #expect(refusal.reason == .version, "\(refusal)")
        #expect(refusal.message.contains("5-5") && refusal.message.contains("speaks 6"), "\(refusal.message)")
        _ = receiving.result()
        #expect(!FileManager.default.fileExists(atPath: scratch.file("g.img")))
    }

    /// Defence in depth: a destination that breaks the protocol (here a fake one) answers the
    /// source's release query — made after VERIFIED was lost and the source resumed its guest —
    /// with `resumed`. The guest now runs in two places: the source says so loudly (split brain,
    /// naming the session) and stops its own copy, so that it runs only on the destination. The
    /// release query presents the token the fake's ACCEPT gave.
    @Test func aDestinationThatResumedWithoutCommitIsReportedAsSplitBrain() throws {
        let scratch = Scratch()
        let size = 8 << 20
        try ImageGenerator.create(
            path: scratch.file("source.img"), size: size, mix: .standard, seed: 3,
            pageSize: systemPageSize, overwrite: true)
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        let sessionID: UInt64 = 0x5B11_7B4A_1200_0001
        let token = SessionToken.random()
        let fake = BackgroundThread { () throws -> StatusQuery in
            defer { listener.close() }
            // The migration: ACCEPT, every round acknowledged, then the connection dies where
            // VERIFIED would go.
            let control = FramedConnection(try listener.accept(timeoutMs: 10_000))
            try control.stream.setReceiveTimeout(ms: 10_000)
            _ = try control.receive(Hello.self)
            try control.send(
                Accept(
                    memoryAvailable: 1 << 40, diskAvailable: 1 << 40, sessionID: sessionID, sessionToken: token,
                    destinationName: "resumes-anyway"))
            while true {
                let frame = try control.receive()
                if frame.type == .roundEnd {
                    let end = try RoundEnd(payload: frame.payload)
                    try control.send(
                        RoundAck(
                            round: end.round, pagesReceived: end.pagesSent, pagesHeld: 0,
                            applyMicroseconds: 0, digestMicroseconds: 0))
                } else if frame.type == .complete {
                    break
                }
            }
            control.close()
            // The source's release: STATUS_QUERY (resolve) on a new connection, answered `resumed`.
            let asking = FramedConnection(try listener.accept(timeoutMs: 10_000))
            defer { asking.close() }
            try asking.stream.setReceiveTimeout(ms: 10_000)
            let query = try asking.receive(StatusQuery.self)
            try asking.send(
                Status(
                    state: .resumed, sessionID: sessionID, digest: 1, pageCount: UInt64(size / systemPageSize),
                    message: "the guest was resumed here"))
            return query
        }
        let region = try MappedRegion.mapFile(path: scratch.file("source.img"), writable: true)
        let setup = try GuestSetup.make(
            workload: "uniform:5MB/s", vcpus: 2, seed: 1, pageSize: systemPageSize,
            pageCount: size / systemPageSize)
        let guest = try Guest(memory: region.base, size: size, configuration: setup.configuration, logger: testLogger)
        guest.start()
        defer { _ = guest.stop() }
        var options = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(listener.port)"), replyTimeout: .milliseconds(5_000),
            streams: 1, resume: false)
        options.settings = ConvergenceSettings(downtimeTarget: .seconds(1), maxRounds: 30, timeout: .seconds(30))
        let agent = SourceAgent(
            memory: region.base, size: size, imagePath: scratch.file("source.img"), guest: guest,
            guestSetup: setup, options: options, logger: testLogger)
        let result = Result { try agent.migrate() }
        let query = try fake.result().get()
        #expect(query.resolve && query.sessionID == sessionID && query.sessionToken == token, "\(query)")
        let error = try #require(result.failure as? MigrationError)
        #expect(
            error.message.contains(
                "split brain: the destination resumed the guest although this source did not commit; the source's copy was stopped"
            ), "\(error)")
        #expect(error.message.contains(hex(sessionID)), "\(error)")
        #expect(error.guest == .destination)
        #expect(error.code == .protocolViolation)
        let before = guest.totalSteps
        Thread.sleep(forTimeInterval: 0.2)
        #expect(guest.totalSteps == before, "the source's copy must be stopped")
    }
}

/// Reads what a source's failure message names for `ferry status`.
enum SourceReports {
    static func word(after flag: String, in text: String) -> String? {
        guard let range = text.range(of: flag + " ") else { return nil }
        return String(text[range.upperBound...].prefix { $0.isHexDigit })
    }

    static func session(in text: String) -> UInt64? {
        word(after: "--session", in: text).flatMap { UInt64($0, radix: 16) }
    }
    static func token(in text: String) -> SessionToken? {
        word(after: "--token", in: text).flatMap(SessionToken.init(hex:))
    }
}
