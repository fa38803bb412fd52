import FerryProtocol
import Testing

/// The handshake payloads of Protocol.md 3.21–3.23 and the transcript bytes of section 9.
@Suite struct AuthenticationMessageTests {
    let hello = AuthHello(clientNonce: Array(0..<32), encryptRequested: true, ciphers: .all)
    let challenge = AuthChallenge(
        serverNonce: Array(32..<64), cipher: .chacha20Poly1305, serverProof: Array(repeating: 0xEE, count: 32))

    @Test func wireLayout() {
        #expect(hello.encodedPayload() == Array(0..<32) + [1, 0, 3, 0, 0, 0, 0, 0])
        #expect(
            challenge.encodedPayload() == Array(32..<64) + [2, 0, 0, 0, 0, 0, 0, 0] + Array(repeating: 0xEE, count: 32))
        #expect(
            AuthProof(clientProof: Array(repeating: 7, count: 32)).encodedPayload() == Array(repeating: 7, count: 32))
    }

    @Test func unknownFlagsAndCiphersAreRejected() {
        var bytes = hello.encodedPayload()
        bytes[32] = 0x02  // flags bit 1: reserved
        expectRejected(AuthHello.self, bytes, .invalidField)
        bytes = hello.encodedPayload()
        bytes[33] = 0x80
        expectRejected(AuthHello.self, bytes, .invalidField)

        var challengeBytes = challenge.encodedPayload()
        challengeBytes[32] = 3  // no such cipher
        expectRejected(AuthChallenge.self, challengeBytes, .invalidField)
    }

    @Test func unknownCipherBitsOfTheSourceAreKept() throws {
        var bytes = hello.encodedPayload()
        bytes[35] = 0x40
        let decoded = try bytes.withUnsafeBytes { try AuthHello(payload: $0) }
        #expect(decoded.ciphers.rawValue == 0x4003)
        #expect(decoded.encodedPayload() == bytes)
    }

    @Test func transcriptIsLabelHelloAndChallengeFields() {
        let server = AuthTranscript.serverProofInput(hello: hello, challenge: challenge)
        let client = AuthTranscript.clientProofInput(hello: hello, challenge: challenge)
        let tail = hello.encodedPayload() + Array(challenge.encodedPayload().prefix(40))
        #expect(server == Array("ferry auth server v1".utf8) + tail)
        #expect(client == Array("ferry auth client v1".utf8) + tail)
        // The proof itself is not MACed.
        var other = challenge
        other.serverProof = Array(repeating: 0, count: 32)
        #expect(AuthTranscript.serverProofInput(hello: hello, challenge: other) == server)
        // The cipher choice is.
        other.cipher = .aes256GCM
        #expect(AuthTranscript.serverProofInput(hello: hello, challenge: other) != server)
    }

    @Test func keyDerivationInputs() {
        #expect(AuthTranscript.keySalt(hello: hello, challenge: challenge) == Array(0..<64))
        #expect(
            AuthTranscript.keyInfo(clientToServer: true, cipher: .aes256GCM) == Array("ferry c2s v1".utf8) + [1, 0])
        #expect(
            AuthTranscript.keyInfo(clientToServer: false, cipher: .chacha20Poly1305) == Array("ferry s2c v1".utf8) + [
                2, 0,
            ])
    }

    @Test func refusalReasonNine() {
        #expect(RefusalReason(wireValue: 9) == .unauthenticated)
    }
}
