/// The authentication handshake (Protocol.md 3.21–3.23 and section 9): the source proves it holds
/// the shared key and the destination proves it too, each with an HMAC-SHA256 over both fresh
/// nonces and the negotiated settings; the session keys of the record layer are derived from the
/// same transcript. This file holds the pure parts: the three payloads and the exact bytes that
/// get MACed and fed to HKDF. The MAC and cipher themselves live in FerryTransport.
public enum AuthConstants {
    /// Bytes of each side's random nonce.
    public static let nonceSize = 32
    /// Bytes of an HMAC-SHA256 proof.
    public static let proofSize = 32
    /// Bytes of `AUTH_HELLO` / of `AUTH_CHALLENGE` before its proof: both enter every MAC.
    public static let helloSize = 40
    public static let challengeFieldsSize = 40

    /// HMAC input labels (ASCII, no terminator): the two proofs can never be swapped.
    public static let serverLabel: [UInt8] = Array("ferry auth server v1".utf8)
    public static let clientLabel: [UInt8] = Array("ferry auth client v1".utf8)
    /// HKDF `info` prefixes of the two directions' record keys.
    public static let clientToServerInfo: [UInt8] = Array("ferry c2s v1".utf8)
    public static let serverToClientInfo: [UInt8] = Array("ferry s2c v1".utf8)
}

/// The AEAD that protects a connection's bytes after the handshake; `none`: authenticated only.
public enum RecordCipher: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case aes256GCM = 1
    case chacha20Poly1305 = 2

    /// The name used in reports and on the command line.
    public var description: String {
        switch self {
        case .none: return "none"
        case .aes256GCM: return "aes-256-gcm"
        case .chacha20Poly1305: return "chacha20-poly1305"
        }
    }

    /// The bit of this cipher in `CipherSet` (none for `.none`).
    public var bit: CipherSet {
        switch self {
        case .none: return []
        case .aes256GCM: return .aes256GCM
        case .chacha20Poly1305: return .chacha20Poly1305
        }
    }
}

/// Ciphers a source can use (`AUTH_HELLO.ciphers`). Unknown bits are kept as they came: a newer
/// peer may offer more.
public struct CipherSet: OptionSet, Sendable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let aes256GCM = CipherSet(rawValue: 1 << 0)
    public static let chacha20Poly1305 = CipherSet(rawValue: 1 << 1)
    public static let all: CipherSet = [.aes256GCM, .chacha20Poly1305]
}

/// `AUTH_HELLO` (source → destination, type 20): the first frame of every connection of a source
/// that has a key (Protocol.md 3.21).
public struct AuthHello: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.authHello
    /// `flags` bit 0: the source asks for an encrypted connection.
    public static let encryptFlag: UInt16 = 1 << 0

    public var clientNonce: [UInt8]
    public var encryptRequested: Bool
    /// Ciphers the source can use.
    public var ciphers: CipherSet

    public init(clientNonce: [UInt8], encryptRequested: Bool, ciphers: CipherSet) {
        self.clientNonce = clientNonce
        self.encryptRequested = encryptRequested
        self.ciphers = ciphers
    }

    public func validate() throws(ProtocolError) {
        if clientNonce.count != AuthConstants.nonceSize {
            throw invalid(
                "AUTH_HELLO", "client_nonce is \(clientNonce.count) bytes, must be \(AuthConstants.nonceSize)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.append(contentsOf: clientNonce)
        out.appendLittleEndian(encryptRequested ? Self.encryptFlag : 0)
        out.appendLittleEndian(ciphers.rawValue)
        out.appendZeros(4)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "AUTH_HELLO")
        clientNonce = try reader.readBytes(AuthConstants.nonceSize, "client_nonce")
        let flags = try reader.read(UInt16.self, "flags")
        if flags & ~Self.encryptFlag != 0 {
            throw invalid(
                "AUTH_HELLO", "flags 0x\(String(flags, radix: 16)) has bits other than bit 0 set (reserved, 0)")
        }
        encryptRequested = flags & Self.encryptFlag != 0
        ciphers = CipherSet(rawValue: try reader.read(UInt16.self, "ciphers"))
        try reader.reserved(4)
        try reader.finish()
    }
}

/// `AUTH_CHALLENGE` (destination → source, type 21): the destination's nonce, its choice of
/// cipher, and its proof that it holds the key (Protocol.md 3.22).
public struct AuthChallenge: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.authChallenge

    public var serverNonce: [UInt8]
    /// The cipher of the record layer from the next frame on; `.none`: not encrypted.
    public var cipher: RecordCipher
    /// HMAC-SHA256(key, `AuthTranscript.serverProofInput`).
    public var serverProof: [UInt8]

    public init(serverNonce: [UInt8], cipher: RecordCipher, serverProof: [UInt8]) {
        self.serverNonce = serverNonce
        self.cipher = cipher
        self.serverProof = serverProof
    }

    public func validate() throws(ProtocolError) {
        if serverNonce.count != AuthConstants.nonceSize {
            throw invalid(
                "AUTH_CHALLENGE", "server_nonce is \(serverNonce.count) bytes, must be \(AuthConstants.nonceSize)")
        }
        if serverProof.count != AuthConstants.proofSize {
            throw invalid(
                "AUTH_CHALLENGE", "server_proof is \(serverProof.count) bytes, must be \(AuthConstants.proofSize)")
        }
    }

    /// The first 40 bytes of the payload: everything but the proof (they enter the MACs).
    public func encodeFields(into out: inout [UInt8]) {
        out.append(contentsOf: serverNonce)
        out.appendLittleEndian(cipher.rawValue)
        out.appendZeros(6)
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        encodeFields(into: &out)
        out.append(contentsOf: serverProof)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "AUTH_CHALLENGE")
        serverNonce = try reader.readBytes(AuthConstants.nonceSize, "server_nonce")
        let raw = try reader.read(UInt16.self, "cipher")
        guard let cipher = RecordCipher(rawValue: raw) else {
            throw invalid("AUTH_CHALLENGE", "cipher \(raw) is not 0 (none), 1 (AES-256-GCM) or 2 (ChaCha20-Poly1305)")
        }
        self.cipher = cipher
        try reader.reserved(6)
        serverProof = try reader.readBytes(AuthConstants.proofSize, "server_proof")
        try reader.finish()
    }
}

/// `AUTH_PROOF` (source → destination, type 22): the source's proof that it holds the key
/// (Protocol.md 3.23).
public struct AuthProof: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.authProof

    /// HMAC-SHA256(key, `AuthTranscript.clientProofInput`).
    public var clientProof: [UInt8]

    public init(clientProof: [UInt8]) {
        self.clientProof = clientProof
    }

    public func validate() throws(ProtocolError) {
        if clientProof.count != AuthConstants.proofSize {
            throw invalid(
                "AUTH_PROOF", "client_proof is \(clientProof.count) bytes, must be \(AuthConstants.proofSize)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.append(contentsOf: clientProof)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "AUTH_PROOF")
        clientProof = try reader.readBytes(AuthConstants.proofSize, "client_proof")
        try reader.finish()
    }
}

/// The exact bytes the handshake MACs and derives keys from (Protocol.md section 9).
public enum AuthTranscript {
    /// label ‖ AUTH_HELLO payload (40 bytes) ‖ AUTH_CHALLENGE payload bytes 0–39 (nonce, cipher, reserved).
    static func proofInput(label: [UInt8], hello: AuthHello, challenge: AuthChallenge) -> [UInt8] {
        var out = label
        out.reserveCapacity(label.count + AuthConstants.helloSize + AuthConstants.challengeFieldsSize)
        hello.encode(into: &out)
        challenge.encodeFields(into: &out)
        return out
    }

    /// What the destination MACs for `AUTH_CHALLENGE.server_proof`.
    public static func serverProofInput(hello: AuthHello, challenge: AuthChallenge) -> [UInt8] {
        proofInput(label: AuthConstants.serverLabel, hello: hello, challenge: challenge)
    }

    /// What the source MACs for `AUTH_PROOF.client_proof`.
    public static func clientProofInput(hello: AuthHello, challenge: AuthChallenge) -> [UInt8] {
        proofInput(label: AuthConstants.clientLabel, hello: hello, challenge: challenge)
    }

    /// HKDF salt of the record keys: client_nonce ‖ server_nonce.
    public static func keySalt(hello: AuthHello, challenge: AuthChallenge) -> [UInt8] {
        hello.clientNonce + challenge.serverNonce
    }

    /// HKDF info of one direction's record key: "ferry c2s v1" or "ferry s2c v1" ‖ cipher (u16 LE),
    /// so a key is never used with two ciphers.
    public static func keyInfo(clientToServer: Bool, cipher: RecordCipher) -> [UInt8] {
        var out = clientToServer ? AuthConstants.clientToServerInfo : AuthConstants.serverToClientInfo
        out.appendLittleEndian(cipher.rawValue)
        return out
    }
}
