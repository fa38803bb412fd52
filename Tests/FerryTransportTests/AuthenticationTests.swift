import FerryProtocol
import FerryTestSupport
import Foundation
import Glibc
import Testing

@testable import FerryTransport

/// The handshake and record layer of Protocol.md section 9 over real loopback TCP.
@Suite("Authentication", .timeLimit(.minutes(1)), .tags(.slow), .skippable(.slow))
struct AuthenticationTests {
    static let keyA = try! SharedKey(bytes: Array(repeating: 0xA5, count: 32))
    static let keyB = try! SharedKey(bytes: Array(repeating: 0xA5, count: 31) + [0xA6])

    /// Runs the source side (`authenticate(asClient:)`, then a JOIN) and the destination side
    /// (first frame, `authenticate(asServer:)`) on one connection.
    static func handshake(
        client: ConnectionSecurity, server: ConnectionSecurity, streams: (TCPStream, TCPStream)? = nil
    )
        throws -> (
            client: FramedConnection, server: FramedConnection, clientResult: Result<Void, TransportError>,
            serverResult: Result<ReceivedFrameCopy, TransportError>
        )
    {
        let (a, b) = try streams ?? loopbackPair()
        let left = FramedConnection(a)
        let right = FramedConnection(b)
        let serverThread = JoinableThread { () -> Result<ReceivedFrameCopy, TransportError> in
            do throws(TransportError) {
                right.receiveLimit = 4096
                let frame = try right.authenticate(asServer: server, firstFrame: right.receive())
                right.receiveLimit = right.maxPayload
                return .success(ReceivedFrameCopy(type: frame.type, payload: Array(frame.payload)))
            } catch {
                right.close()
                return .failure(error)
            }
        }
        let clientResult: Result<Void, TransportError>
        do throws(TransportError) {
            try left.authenticate(asClient: client)
            try left.send(Join(sessionID: 42, sessionToken: SessionToken(low: 7, high: 9), streamIndex: 1))
            clientResult = .success(())
        } catch {
            clientResult = .failure(error)
        }
        return (left, right, clientResult, try serverThread.join())
    }

    struct ReceivedFrameCopy: Sendable {
        var type: FrameType
        var payload: [UInt8]
    }

    @Test(arguments: [RecordCipher.none, .aes256GCM, .chacha20Poly1305])
    func mutualAuthenticationSucceeds(_ cipher: RecordCipher) throws {
        let client = ConnectionSecurity(
            key: Self.keyA, encrypt: cipher != .none, ciphers: cipher == .none ? RecordCipher.preferredOrder : [cipher])
        let (left, right, clientResult, serverResult) = try Self.handshake(
            client: client, server: ConnectionSecurity(key: Self.keyA))
        try clientResult.get()
        let first = try serverResult.get()
        #expect(first.type == .join)
        #expect(
            try first.payload.withUnsafeBytes { try Join(payload: $0) }
                == Join(sessionID: 42, sessionToken: SessionToken(low: 7, high: 9), streamIndex: 1))
        #expect(left.security == ConnectionSecurityState(authenticated: true, cipher: cipher))
        #expect(right.security == left.security)

        // Frames of every size both ways, a multi-record one read in place through scatter vectors.
        try right.send(TestAck(round: 7))
        #expect(try left.receive(TestAck.self) == TestAck(round: 7))
        let big = (0..<(3 << 20) + 12345).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        let sender = JoinableThread { try big.withUnsafeBytes { try left.send(.pageBatch, payload: $0) } }
        guard case .direct(_, let type, let length) = try right.receive(direct: .pageBatch) else {
            Issue.record("expected a direct frame")
            return
        }
        #expect(type == .pageBatch && length == big.count)
        var received = [UInt8](repeating: 0, count: big.count)
        try received.withUnsafeMutableBytes { buffer in
            // Uneven pieces, so vectors straddle record boundaries.
            var offset = 0
            var pieces: [iovec] = []
            while offset < buffer.count {
                let size = min(buffer.count - offset, 4096 * 3 + 17 * pieces.count)
                pieces.append(iovec(iov_base: buffer.baseAddress! + offset, iov_len: size))
                offset += size
            }
            var start = 0
            while start < pieces.count {
                let end = min(start + 1024, pieces.count)
                try pieces[start..<end].withUnsafeMutableBufferPointer { try right.readDirect(vectors: $0) }
                start = end
            }
        }
        try sender.join()
        #expect(received == big)
        try left.send(TestAck(round: 8))
        #expect(try right.receive(TestAck.self) == TestAck(round: 8))
    }

    @Test func destinationCanInsistOnEncryption() throws {
        let (left, _, clientResult, serverResult) = try Self.handshake(
            client: ConnectionSecurity(key: Self.keyA),
            server: ConnectionSecurity(key: Self.keyA, encrypt: true, ciphers: [.chacha20Poly1305]))
        try clientResult.get()
        _ = try serverResult.get()
        #expect(left.security.cipher == .chacha20Poly1305)
    }

    @Test func differentKeysAreRefusedOnBothSides() throws {
        let (_, _, clientResult, serverResult) = try Self.handshake(
            client: ConnectionSecurity(key: Self.keyA, encrypt: true), server: ConnectionSecurity(key: Self.keyB))
        let clientError = try #require(clientResult.failure)
        #expect(clientError.code == .unauthenticated)
        #expect(clientError.message.contains("keys differ"), "\(clientError.message)")
        #expect(
            clientError.message.contains("the destination says: the source's AUTH_PROOF did not verify"),
            "\(clientError.message)")
        let serverError = try #require(serverResult.failure)
        #expect(serverError.code == .unauthenticated)
        #expect(serverError.message.contains("AUTH_PROOF did not verify: the keys differ"), "\(serverError.message)")
    }

    @Test func sourceWithoutKeyIsRefused() throws {
        let (left, _, clientResult, serverResult) = try Self.handshake(
            client: .none, server: ConnectionSecurity(key: Self.keyA))
        try clientResult.get()  // sent its JOIN in plain
        let serverError = try #require(serverResult.failure)
        #expect(serverError.code == .unauthenticated)
        let refuse = try left.receive(Refuse.self)
        #expect(refuse.reason == .unauthenticated)
        #expect(refuse.message.contains("--key-file"))
    }

    @Test func destinationWithoutKeyRefusesASourceWithOne() throws {
        let (_, _, clientResult, serverResult) = try Self.handshake(
            client: ConnectionSecurity(key: Self.keyA), server: .none)
        let clientError = try #require(clientResult.failure)
        #expect(clientError.code == .unauthenticated)
        #expect(clientError.message.contains("this destination has no key"), "\(clientError.message)")
        #expect(try #require(serverResult.failure).code == .unauthenticated)
    }

    @Test func withoutKeysNothingChanges() throws {
        let (left, right, clientResult, serverResult) = try Self.handshake(client: .none, server: .none)
        try clientResult.get()
        #expect(try serverResult.get().type == .join)
        #expect(left.security == .plain && right.security == .plain)
    }

    /// A relay between source and destination that lets the handshake through and then changes
    /// one byte of the first sealed record (at `offset` from the record's start).
    @Test(arguments: [4, 4 + 9, 4 + 24 + 15, 0, 3])
    func alteredRecordFailsTheConnectionCleanly(offset: Int) throws {
        let destination = try TCPListener(loopback)
        let relay = try TCPListener(loopback)
        let client = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: relay.port), timeoutMs: 2000)
        let upstream = try relay.accept(timeoutMs: 2000)
        let downstream = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: destination.port), timeoutMs: 2000)
        let server = try destination.accept(timeoutMs: 2000)
        for stream in [client, upstream, downstream, server] { try stream.setReceiveTimeout(ms: 5000) }
        @Sendable func forward(_ count: Int, from: TCPStream, to: TCPStream, flip: Int? = nil) throws {
            var bytes = [UInt8](repeating: 0, count: count)
            try bytes.withUnsafeMutableBytes { try from.readExactly(into: $0) }
            if let flip { bytes[flip] ^= 0x40 }
            try bytes.withUnsafeBytes { try to.writeAll($0) }
        }
        let sourceToDestination = JoinableThread {
            try forward(16 + 40, from: upstream, to: downstream)  // AUTH_HELLO
            try forward(16 + 32, from: upstream, to: downstream)  // AUTH_PROOF
            var header = [UInt8](repeating: 0, count: 4)
            try header.withUnsafeMutableBytes { try upstream.readExactly(into: $0) }
            let length = Int(header[0]) | Int(header[1]) << 8 | Int(header[2]) << 16 | Int(header[3]) << 24
            var record = [UInt8](repeating: 0, count: length + 16)
            try record.withUnsafeMutableBytes { try upstream.readExactly(into: $0) }
            var all = header + record
            // Offset 0: the 32-byte record claims 16 (shortened); offset 3: a huge length; else ciphertext or tag.
            all[offset] ^= offset == 0 ? 0x30 : offset == 3 ? 0x7F : 0x40
            try all.withUnsafeBytes { try downstream.writeAll($0) }
        }
        let destinationToSource = JoinableThread { try forward(16 + 72, from: downstream, to: upstream) }
        let (_, right, clientResult, serverResult) = try Self.handshake(
            client: ConnectionSecurity(key: Self.keyA, encrypt: true), server: ConnectionSecurity(key: Self.keyA),
            streams: (client, server))
        try sourceToDestination.join()
        try destinationToSource.join()
        try clientResult.get()
        let error = try #require(serverResult.failure)
        #expect(error.code == .decryption)
        #expect(error.message.contains("decryption failed"), "\(error.message)")
        #expect(error.message.contains("altered in flight"), "\(error.message)")
        // The direction stays failed.
        #expect(throws: TransportError.self) { try right.receive() }
        _ = right.security
    }

    // MARK: Key files

    static func writeKeyFile(_ bytes: [UInt8], mode: mode_t = 0o600) throws -> String {
        let path = ScratchFile("key", in: NSTemporaryDirectory()).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    @Test func hexAndRawKeyFilesHoldTheSameKey() throws {
        let secret = (0..<32).map { UInt8($0 * 7 + 1) }
        let hex = try Self.writeKeyFile(Array((secret.map { String(format: "%02X", $0) }.joined() + "\r\n").utf8))
        let raw = try Self.writeKeyFile(secret)
        defer {
            unlink(hex)
            unlink(raw)
        }
        let (_, _, clientResult, serverResult) = try Self.handshake(
            client: ConnectionSecurity(key: try SharedKey.load(path: hex), encrypt: true),
            server: ConnectionSecurity(key: try SharedKey.load(path: raw)))
        try clientResult.get()
        #expect(try serverResult.get().type == .join)
    }

    @Test func unsafeOrShortKeyFilesAreRefused() throws {
        let open = try Self.writeKeyFile(Array(repeating: 1, count: 32), mode: 0o644)
        let short = try Self.writeKeyFile(Array("00112233445566778899aabbccddeeff\n".utf8))
        defer {
            unlink(open)
            unlink(short)
        }
        let openError = #expect(throws: TransportError.self) { try SharedKey.load(path: open) }
        #expect(
            openError?.code == .keyFile && openError?.message.contains("chmod 600") == true,
            "\(openError?.message ?? "")")
        let shortError = #expect(throws: TransportError.self) { try SharedKey.load(path: short) }
        #expect(shortError?.message.contains("holds 32 hex digits, not 64") == true, "\(shortError?.message ?? "")")
        #expect(throws: TransportError.self) { try SharedKey.load(path: "/nonexistent/key") }
    }

    @Test func generatedKeyFilesAreHexAndPrivate() throws {
        let path = ScratchFile("keygen", in: NSTemporaryDirectory()).path
        defer { unlink(path) }
        try SharedKey.generate(path: path)
        var info = stat()
        stat(path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.count == 65 && text.hasSuffix("\n"))
        _ = try SharedKey.load(path: path)
        #expect(throws: TransportError.self) { try SharedKey.generate(path: path) }  // no silent overwrite
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
