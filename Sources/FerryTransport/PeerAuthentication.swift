import Crypto
import FerryProtocol

/// The mutual challenge–response of Protocol.md section 9 on a fresh connection: the source
/// sends `AUTH_HELLO` (its nonce, whether it wants encryption, its ciphers); the destination
/// answers `AUTH_CHALLENGE` (its nonce, the chosen cipher, and an HMAC-SHA256 over both nonces and
/// both settings under the shared key); the source checks it and answers `AUTH_PROOF` (its own
/// HMAC, with another label). Only then does the destination read `HELLO` or `JOIN`. With a
/// cipher chosen, every byte after `AUTH_PROOF` (source → destination) and after the proof has been
/// checked (destination → source) travels in sealed records under keys derived from the
/// handshake. MACs are compared in constant time (swift-crypto's `isValidAuthenticationCode`).
///
/// When the keys differ both sides find out: the source sees a server proof that does not match,
/// still sends its proof so that the destination can tell, and reads the destination's
/// `REFUSE unauthenticated`.
extension FramedConnection {
    /// Source side, right after connecting. Without a key it does nothing (a destination that
    /// requires one then refuses the `HELLO`).
    public func authenticate(asClient security: ConnectionSecurity) throws(TransportError) {
        guard let shared = security.key else { return }
        var offered = CipherSet()
        for cipher in security.ciphers { offered.insert(cipher.bit) }
        let hello = AuthHello(clientNonce: Self.randomNonce(), encryptRequested: security.encrypt, ciphers: offered)
        try send(hello)
        let challenge = try receiveChallenge()
        let proof = Array(
            HMAC<SHA256>.authenticationCode(
                for: AuthTranscript.clientProofInput(hello: hello, challenge: challenge), using: shared.key))
        let serverInput = AuthTranscript.serverProofInput(hello: hello, challenge: challenge)
        guard
            HMAC<SHA256>.isValidAuthenticationCode(
                challenge.serverProof, authenticating: serverInput, using: shared.key)
        else {
            // Send our proof anyway: the destination rejects it too and can say so in its log.
            var said = ""
            if (try? send(AuthProof(clientProof: proof))) != nil, let answer = try? receive(), answer.type == .refuse,
                let refuse = try? Refuse(payload: answer.payload)
            {
                said = "; the destination says: \(refuse.message)"
            }
            throw TransportError(
                .unauthenticated,
                "destination \(peerDescription) could not prove it holds our key: the two --key-file keys differ (or the handshake was altered in flight)\(said)"
            )
        }
        if security.encrypt && challenge.cipher == .none {
            throw TransportError(
                .unauthenticated, "destination \(peerDescription) did not agree to encrypt the connection")
        }
        if challenge.cipher != .none && !security.ciphers.contains(challenge.cipher) {
            throw TransportError(
                .protocolViolation,
                "destination \(peerDescription) chose cipher \(challenge.cipher), which this source did not offer")
        }
        try send(AuthProof(clientProof: proof))
        if challenge.cipher != .none {
            startRecords(
                send: RecordKey(
                    shared: shared.key, cipher: challenge.cipher, hello: hello, challenge: challenge,
                    clientToServer: true, seal: true),
                receive: RecordKey(
                    shared: shared.key, cipher: challenge.cipher, hello: hello, challenge: challenge,
                    clientToServer: false, seal: false))
        }
        self.security = ConnectionSecurityState(authenticated: true, cipher: challenge.cipher)
    }

    /// Destination side, given the connection's first frame: with a key, that frame must be
    /// `AUTH_HELLO`; the handshake runs and the first frame after it is returned. Without a key
    /// the first frame is returned as it is, unless it is `AUTH_HELLO`. A peer that does not
    /// authenticate is sent `REFUSE unauthenticated` (where it can read one) and the error is thrown;
    /// the caller closes the connection.
    public func authenticate(asServer security: ConnectionSecurity, firstFrame: ReceivedFrame) throws(TransportError)
        -> ReceivedFrame
    {
        guard let shared = security.key else {
            guard firstFrame.type != .authHello else {
                try? send(
                    Refuse(
                        reason: .unauthenticated,
                        message:
                            "this destination has no key: start it with --key-file, or start the source without one"))
                throw TransportError(
                    .unauthenticated,
                    "refused a source that wants to authenticate: this destination has no key (--key-file)")
            }
            return firstFrame
        }
        guard firstFrame.type == .authHello else {
            if [.hello, .join, .resume, .statusQuery, .diskHello, .diskResume, .diskJoin].contains(firstFrame.type) {
                try? send(
                    Refuse(
                        reason: .unauthenticated,
                        message:
                            "this destination requires authentication: give --key-file naming the same key as the destination's"
                    ))
                throw TransportError(
                    .unauthenticated,
                    "refused a \(firstFrame.type.wireName) from a source without a key: this destination has --key-file"
                )
            }
            throw TransportError(
                .protocolViolation, "connection opened with \(firstFrame.type.wireName) instead of AUTH_HELLO")
        }
        let hello: AuthHello
        do {
            hello = try AuthHello(payload: firstFrame.payload)
        } catch {
            try? send(Refuse(reason: .malformed, message: "AUTH_HELLO rejected: \(error.message)"))
            throw TransportError(.protocolViolation, "malformed AUTH_HELLO: \(error.message)", protocolError: error)
        }
        let cipher = try chooseCipher(for: hello, security: security)
        var challenge = AuthChallenge(serverNonce: Self.randomNonce(), cipher: cipher, serverProof: [])
        challenge.serverProof = Array(
            HMAC<SHA256>.authenticationCode(
                for: AuthTranscript.serverProofInput(hello: hello, challenge: challenge), using: shared.key))
        try send(challenge)
        let proof = try receive(AuthProof.self)
        let clientInput = AuthTranscript.clientProofInput(hello: hello, challenge: challenge)
        guard HMAC<SHA256>.isValidAuthenticationCode(proof.clientProof, authenticating: clientInput, using: shared.key)
        else {
            // A wrong key and a replayed or forged AUTH_PROOF look the same from here.
            try? send(
                Refuse(
                    reason: .unauthenticated,
                    message:
                        "the source's AUTH_PROOF did not verify: its key differs from this destination's (give both the same --key-file), or the handshake was replayed or forged"
                ))
            throw TransportError(
                .unauthenticated,
                "refused a connection whose AUTH_PROOF did not verify: the keys differ (--key-file), or the handshake was replayed or forged"
            )
        }
        if cipher != .none {
            startRecords(
                send: RecordKey(
                    shared: shared.key, cipher: cipher, hello: hello, challenge: challenge, clientToServer: false,
                    seal: true),
                receive: RecordKey(
                    shared: shared.key, cipher: cipher, hello: hello, challenge: challenge, clientToServer: true,
                    seal: false))
        }
        self.security = ConnectionSecurityState(authenticated: true, cipher: cipher)
        return try receive()
    }

    /// The destination's answer to `AUTH_HELLO`: its `AUTH_CHALLENGE`, or an error naming its refusal.
    private func receiveChallenge() throws(TransportError) -> AuthChallenge {
        let reply: ReceivedFrame
        do {
            reply = try receive()
        } catch {
            if error.code == .peerClosed {
                // Not a refusal: a destination that refuses says so with REFUSE. One that is
                // overloaded or limits connections that have not authenticated yet just closes,
                // so this counts as a lost connection, which a source may retry.
                throw TransportError(
                    .peerClosed,
                    "destination \(peerDescription) closed the connection during authentication, before answering AUTH_HELLO: it may be overloaded or limiting unauthenticated connections (try again), or not be configured with --key-file (\(error.message))"
                )
            }
            throw error
        }
        switch reply.type {
        case .authChallenge:
            break
        case .refuse:
            let message = (try? Refuse(payload: reply.payload))?.message ?? "(unreadable REFUSE)"
            throw TransportError(.unauthenticated, "destination \(peerDescription) refused to authenticate: \(message)")
        default:
            throw TransportError(
                .protocolViolation,
                "expected AUTH_CHALLENGE or REFUSE from \(peerDescription), got \(reply.type.wireName)")
        }
        do {
            return try AuthChallenge(payload: reply.payload)
        } catch {
            throw TransportError(
                .protocolViolation, "malformed AUTH_CHALLENGE from \(peerDescription): \(error.message)",
                protocolError: error)
        }
    }

    /// The cipher for a connection: none unless one side asks to encrypt, else the first of ours
    /// that the source offers. Without one in common, the source is refused.
    private func chooseCipher(for hello: AuthHello, security: ConnectionSecurity) throws(TransportError)
        -> RecordCipher
    {
        guard hello.encryptRequested || security.encrypt else { return .none }
        guard let chosen = security.ciphers.first(where: { hello.ciphers.contains($0.bit) }) else {
            let ours = security.ciphers.map(\.description).joined(separator: ", ")
            try? send(
                Refuse(
                    reason: .unsupported,
                    message:
                        "no cipher in common: this destination uses \(ours), the source offers ciphers 0x\(String(hello.ciphers.rawValue, radix: 16))"
                ))
            throw TransportError(
                .unauthenticated,
                "refused a source with no cipher in common (it offers 0x\(String(hello.ciphers.rawValue, radix: 16)))"
            )
        }
        return chosen
    }

    private static func randomNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<AuthConstants.nonceSize).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}
