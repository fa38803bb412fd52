import Crypto
import FerryProtocol
import FerryTestSupport
import Foundation
import Glibc
import Testing

@testable import FerryTransport

/// Issue 11, finding 8: what a key file may hold, and what the two sides say when a handshake
/// fails for a reason other than different keys.
@Suite("Key files and handshake messages", .timeLimit(.minutes(1)))
struct KeyFileFormatTests {
    static let secret = (0..<32).map { UInt8($0 * 7 + 1) }
    static let hex = secret.map { String(format: "%02x", $0) }.joined()

    /// Exactly 64 hex digits (a trailing newline or other whitespace allowed) or exactly 32 raw
    /// bytes: all the same key.
    @Test(arguments: [hex, hex + "\n", hex.uppercased() + "\r\n", hex + " \t\n"])
    func sixtyFourHexDigitsAreTheKey(_ text: String) throws {
        #expect(try SharedKey.decode(Array(text.utf8)) == Self.secret)
    }

    @Test func thirtyTwoRawBytesAreTheKey() throws {
        #expect(try SharedKey.decode(Self.secret) == Self.secret)
        // Raw bytes are taken as they are, a final 0x0A included.
        let endsInNewline = Array(Self.secret.dropLast()) + [0x0A]
        #expect(try SharedKey.decode(endsInNewline) == endsInNewline)
    }

    /// Each refused with the reason and the fix, through `load` as `--key-file` reads it.
    @Test(arguments: [
        ("63 hex digits", Array(String(hex.dropLast()).utf8) + [0x0A], "holds 63 hex digits, not 64 (truncated?)"),
        ("the key twice", Array((hex + hex + "\n").utf8), "holds 128 hex digits, not 64"),
        ("the key twice on two lines", Array((hex + "\n" + hex + "\n").utf8), "neither 64 hex digits nor 32 raw bytes"),
        ("32 hex digits", Array(String(hex.prefix(32)).utf8), "holds 32 hex digits, not 64"),
        ("33 raw bytes", secret + [0x99], "holds 33 bytes that are neither"),
        ("31 raw bytes", Array(secret.dropLast()), "holds 31 bytes that are neither"),
        ("32 zero bytes", [UInt8](repeating: 0, count: 32), "all zero"),
        ("64 hex zeros", Array((String(repeating: "0", count: 64) + "\n").utf8), "all zero"),
        ("empty", [], "holds 0 bytes"),
    ])
    func malformedKeyFilesAreRefused(_ name: String, _ contents: [UInt8], _ reason: String) throws {
        let path = ScratchFile("key", in: NSTemporaryDirectory()).path
        try Data(contents).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o600)
        defer { unlink(path) }
        let error = #expect(throws: TransportError.self, "\(name)") { try SharedKey.load(path: path) }
        #expect(error?.code == .keyFile)
        #expect(error?.message.contains(reason) == true, "\(name): \(error?.message ?? "")")
        #expect(error?.message.contains("ferry keygen --out FILE") == true, "\(name): \(error?.message ?? "")")
        #expect(error?.message.contains(path) == true, "\(name): \(error?.message ?? "")")
    }

    /// A stranger that recorded a genuine source's AUTH_HELLO and AUTH_PROOF replays them on a new
    /// connection: the destination's fresh nonce makes the old proof fail, and both sides say that
    /// the proof did not verify (keys differ, or a replay or forgery), not just "key differs".
    @Test func replayedProofIsReportedAsNotVerifying() throws {
        let key = try SharedKey(bytes: Self.secret)
        let server = ConnectionSecurity(key: key)
        let hello = AuthHello(clientNonce: (0..<32).map { UInt8($0) }, encryptRequested: false, ciphers: CipherSet())

        // The genuine handshake, recorded.
        let (a, b) = try loopbackPair()
        let genuine = FramedConnection(a)
        let genuineServer = FramedConnection(b)
        let accepted = JoinableThread { () throws -> FrameType in
            try genuineServer.authenticate(asServer: server, firstFrame: genuineServer.receive()).type
        }
        try genuine.send(hello)
        let challenge = try genuine.receive(AuthChallenge.self)
        let proof = AuthProof(
            clientProof: Array(
                HMAC<SHA256>.authenticationCode(
                    for: AuthTranscript.clientProofInput(hello: hello, challenge: challenge), using: key.key)))
        try genuine.send(proof)
        try genuine.send(Join(sessionID: 7, sessionToken: SessionToken(low: 7, high: 7), streamIndex: 1))
        #expect(try accepted.join() == .join)

        // The replay.
        let (c, d) = try loopbackPair()
        let replayer = FramedConnection(c)
        let replayServer = FramedConnection(d)
        let refused = JoinableThread { () throws -> TransportError? in
            do throws(TransportError) {
                _ = try replayServer.authenticate(asServer: server, firstFrame: replayServer.receive())
                return nil
            } catch {
                return error
            }
        }
        try replayer.send(hello)
        let fresh = try replayer.receive(AuthChallenge.self)
        #expect(fresh.serverNonce != challenge.serverNonce)
        try replayer.send(proof)
        let refusal = try replayer.receive(Refuse.self)
        let serverError = try #require(try refused.join())
        #expect(serverError.code == .unauthenticated)
        #expect(serverError.message.contains("AUTH_PROOF did not verify"), "\(serverError.message)")
        #expect(serverError.message.contains("replayed or forged"), "\(serverError.message)")
        #expect(!serverError.message.contains("key differs from ours"), "\(serverError.message)")
        #expect(
            refusal.message.contains("did not verify") && refusal.message.contains("replayed or forged"),
            "\(refusal.message)")
    }

    /// A destination that closes (FIN) or resets (RST) the connection after reading AUTH_HELLO, as
    /// an overloaded one does: the source hears that it closed during authentication and may
    /// retry (a lost connection, not a refusal), not "a ferry without --key-file support?".
    @Test(arguments: [false, true])
    func destinationClosingDuringTheHandshakeIsALostConnection(reset: Bool) throws {
        let listener = try TCPListener(loopback)
        let closer = JoinableThread {
            var stream: TCPStream? = try listener.accept(timeoutMs: 5000)
            var header = [UInt8](repeating: 0, count: 16 + 40)
            try header.withUnsafeMutableBytes { try stream!.readExactly(into: $0) }  // AUTH_HELLO
            if reset {
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                setsockopt(stream!.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            } else {
                stream!.close()
            }
            stream = nil  // the descriptor is closed here: FIN, or RST with a zero linger
        }
        let client = FramedConnection(
            try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000))
        try client.stream.setReceiveTimeout(ms: 5000)
        let error = #expect(throws: TransportError.self) {
            try client.authenticate(asClient: ConnectionSecurity(key: try SharedKey(bytes: Self.secret)))
        }
        try closer.join()
        #expect(error?.code == .peerClosed, "\(error?.message ?? "")")
        #expect(
            error?.message.contains("closed the connection during authentication") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("try again") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("without --key-file support") == false, "\(error?.message ?? "")")
    }
}
