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

/// Whole migrations over authenticated (and encrypted) connections, and a destination with a key
/// that turns strangers away and keeps serving.
@Suite(.serialized) struct SecureMigrationTests {
    static let key = SharedKey.random()

    @Test(arguments: [RecordCipher.aes256GCM, .chacha20Poly1305])
    func encryptedMigrationVerifies(cipher: RecordCipher) throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:40MB/s"
        migration.runFor = 0
        migration.sourceSecurity = ConnectionSecurity(key: Self.key, encrypt: true, ciphers: [cipher])
        migration.destinationSecurity = ConnectionSecurity(key: Self.key)
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(report.verified && destination.report.verified)
        #expect(report.authenticated && destination.report.authenticated)
        #expect(report.encryption == cipher.description && destination.report.encryption == cipher.description)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    @Test func authenticatedWithoutEncryption() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.runFor = 0
        migration.sourceSecurity = ConnectionSecurity(key: Self.key)
        migration.destinationSecurity = ConnectionSecurity(key: Self.key)
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.authenticated && report.encryption == "none")
        #expect(try outcome.destination.get().report.authenticated)
    }

    /// Before the real source connects, a source with another key, one without a key, and a
    /// stranger that sends a 16 MiB frame header all fail; the destination serves on.
    @Test func strangersAreRefusedAndTheDestinationServesOn() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.runFor = 0
        migration.sourceSecurity = ConnectionSecurity(key: Self.key, encrypt: true)
        migration.destinationSecurity = ConnectionSecurity(key: Self.key)
        migration.beforeSource = { port in
            let endpoint = Endpoint(host: "127.0.0.1", port: port)
            // Another key.
            let other = FramedConnection(try TCPStream.connect(endpoint, timeoutMs: 2000))
            let error = #expect(throws: TransportError.self) {
                try other.authenticate(
                    asClient: ConnectionSecurity(
                        key: try SharedKey(bytes: Array(repeating: 9, count: 40)), encrypt: true))
            }
            #expect(
                error?.code == .unauthenticated && error?.message.contains("keys differ") == true,
                "\(error?.message ?? "")")
            // No key: its HELLO is refused.
            let plain = FramedConnection(try TCPStream.connect(endpoint, timeoutMs: 2000))
            try plain.stream.setReceiveTimeout(ms: 5000)
            try plain.send(Hello(pageSize: 4096, pageCount: 8192, vcpuCount: 2, sourceName: "stranger"))
            let refuse = try plain.receive(Refuse.self)
            #expect(refuse.reason == .unauthenticated)
            // A large frame before authenticating: closed without reading it.
            let big = try TCPStream.connect(endpoint, timeoutMs: 2000)
            try big.setReceiveTimeout(ms: 5000)
            let header = FrameHeader(FrameType.pageBatch, length: 16 << 20, sequence: 0).bytes
            try header.withUnsafeBytes { try big.writeAll($0) }
            var byte: UInt8 = 0
            #expect(throws: TransportError.self) {
                try withUnsafeMutableBytes(of: &byte) { try big.readExactly(into: $0) }
            }
        }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.verified && report.authenticated && report.encryption != "none")
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    @Test func sourceWithAnotherKeyKeepsItsGuest() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.sourceSecurity = ConnectionSecurity(key: try SharedKey(bytes: Array(repeating: 3, count: 32)))
        migration.destinationSecurity = ConnectionSecurity(key: Self.key)
        // The destination waits for a source that never authenticates: shorten its wait.
        migration.acceptTimeoutMs = 1500
        let outcome = try migration.run(in: scratch)
        guard case .failure(let failure) = outcome.source else {
            Issue.record("the migration succeeded")
            return
        }
        let error = try #require(failure as? MigrationError)
        #expect(error.code == .refused && error.guest == .source)
        #expect(error.message.contains("keys differ"), "\(error.message)")
        #expect(outcome.guestWasRunningAfterFailure)
        guard case .failure = outcome.destination else {
            Issue.record("the destination received a guest")
            return
        }
    }

    /// An encrypted migration cut in round 0 resumes: the new control connection and page
    /// streams authenticate and get fresh record keys, and the image verifies.
    @Test func encryptedMigrationResumesAfterACut() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 64 << 20
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        migration.sourceSecurity = ConnectionSecurity(key: Self.key, encrypt: true)
        migration.destinationSecurity = ConnectionSecurity(key: Self.key)
        let holder = ResumeTests.RelayHolder()
        migration.route = { port in
            let relay = try Relay(to: port)
            relay.cut(afterBytes: 8 << 20)
            holder.relay = relay
            return relay.port
        }
        let outcome = try migration.run(in: scratch)
        defer { holder.relay?.stop() }
        let report = try outcome.source.get()
        #expect(report.resumes == 1)
        #expect(report.encryption != "none")
        _ = try outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// With a key, the source's STATUS_QUERY after a lost COMMIT authenticates like every other
    /// connection, and the COMMIT it sends again gets through.
    @Test func authenticatedSourceResolvesALostCommit() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        migration.sourceSecurity = ConnectionSecurity(key: Self.key)
        migration.destinationSecurity = ConnectionSecurity(key: Self.key)
        let relay = migration.cutFirst(.commit, going: .toDestination)
        let outcome = try migration.run(in: scratch)
        relay.value?.stop()
        let report = try outcome.source.get()
        #expect(report.handoff?.contains("first COMMIT was lost") == true, "\(report.handoff ?? "nil")")
        #expect(try outcome.destination.get().report.guestLocation == .destination)
    }
}
