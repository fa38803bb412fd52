import Crypto
import FerryTransport
import Foundation

/// How a request to the agent's API proves that its sender holds the shared key, without sending
/// the key: an HMAC-SHA256 over the request, in one header (docs/agent.md, "Authentication").
///
///     Authorization: Ferry-HMAC-SHA256 key=KEYID, ts=UNIX-SECONDS, nonce=32-HEX, mac=64-HEX
///
/// The MAC covers `ferry-agent-api v1`, the method, the `Host` header (the authority the client
/// addressed, `HOST:PORT` as sent), the request target (path and query, as sent), the time, the
/// nonce and the SHA-256 of the body, one per line. The `Host` line binds a request to one agent:
/// another agent sharing the key refuses it (`RequestAudience`). Its key is derived from
/// the shared key (`SharedKey.derived(for:)`), so no MAC of the API verifies in the migration
/// handshake or the other way round. `KEYID` (16 hex digits of another MAC) tells an agent that
/// a request was signed with a different key, so it can say so instead of "bad signature".
///
/// The server and the client both use this type: the client to sign (`authorization`), the
/// server to recompute the MAC (`RequestVerifier`).
///
/// `@unchecked Sendable`: `SymmetricKey` (not marked Sendable by swift-crypto 3) is an immutable
/// value, as in `SharedKey`.
public struct RequestSignature: @unchecked Sendable {
    /// The scheme word of the header (and of a 401's `WWW-Authenticate`).
    public static let scheme = "Ferry-HMAC-SHA256"
    static let label = "ferry-agent-api v1"
    static let nonceBytes = 16

    private let key: SymmetricKey
    /// 16 hex digits that name the key (a MAC of a constant under the derived key): safe to show.
    public let keyID: String

    public init(key shared: SharedKey) {
        key = shared.derived(for: Self.label)
        keyID = Self.hex(Array(HMAC<SHA256>.authenticationCode(for: Array("key id".utf8), using: key)).prefix(8))
    }

    /// The `Authorization` header's value for a request; `time` (Unix seconds) and `nonce` are
    /// fresh unless a test pins them.
    /// `host` is the request's `Host` header exactly as it is sent (`127.0.0.1:7460`).
    public func authorization(
        method: String, host: String, target: String, body: some Collection<UInt8>, time: Int64? = nil,
        nonce: [UInt8]? = nil
    ) -> String {
        let time = time ?? Int64(Date().timeIntervalSince1970)
        let nonce = Self.hex(nonce ?? Self.randomNonce())
        let text = Self.signedText(
            method: method, host: host, target: target, time: time, nonce: nonce, bodyDigest: Self.digest(body))
        let mac = HMAC<SHA256>.authenticationCode(for: text, using: key)
        return "\(Self.scheme) key=\(keyID), ts=\(time), nonce=\(nonce), mac=\(Self.hex(mac))"
    }

    /// Whether `mac` is the MAC of the request's parts (compared in constant time).
    func isValid(
        mac: [UInt8], method: String, host: String, target: String, time: Int64, nonce: String, bodyDigest: String
    ) -> Bool {
        let text = Self.signedText(
            method: method, host: host, target: target, time: time, nonce: nonce, bodyDigest: bodyDigest)
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: text, using: key)
    }

    /// The lines the MAC covers, in order (docs/agent.md, "Authentication").
    static func signedText(
        method: String, host: String, target: String, time: Int64, nonce: String, bodyDigest: String
    ) -> [UInt8] {
        Array([label, method, host, target, String(time), nonce, bodyDigest].joined(separator: "\n").utf8)
    }

    /// The SHA-256 of a body in hex (the empty body's for none).
    static func digest(_ body: some Collection<UInt8>) -> String {
        hex(Array(SHA256.hash(data: Array(body))))
    }

    static func randomNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The parts of a `Ferry-HMAC-SHA256` header, as sent (not yet verified).
struct Credential: Equatable {
    var keyID: String
    var time: Int64
    var nonce: String
    var mac: [UInt8]

    /// Parses the header's value; a missing header, another scheme or a part that is missing,
    /// repeated or malformed is a 401 that says which.
    static func parse(_ header: String?) throws(AgentAPIError) -> Credential {
        let fix = "sign requests with the shared key (FerryAgent's AgentClient, or `ferry host show --key-file K`)"
        guard let header, !header.isEmpty else {
            throw .unauthenticated(
                .missingCredentials, "this request needs an Authorization header (\(RequestSignature.scheme)); \(fix)")
        }
        let scheme = header.prefix(while: { $0 != " " })
        guard scheme == RequestSignature.scheme else {
            throw .unauthenticated(
                .missingCredentials,
                "the Authorization header's scheme is '\(scheme.prefix(40))', not \(RequestSignature.scheme); \(fix)")
        }
        var parts: [String: String] = [:]
        for item in header.dropFirst(scheme.count).split(separator: ",") {
            let pair = item.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            guard pair.count == 2, parts.updateValue(String(pair[1]), forKey: String(pair[0])) == nil else {
                throw malformed("'\(item.prefix(40))' is not NAME=VALUE, or repeats a name")
            }
        }
        guard Set(parts.keys) == ["key", "ts", "nonce", "mac"] else {
            throw malformed(
                "it needs exactly key, ts, nonce and mac, got \(parts.keys.sorted().joined(separator: ", "))")
        }
        let keyID = parts["key"]!
        guard keyID.count == 16, isHex(keyID) else { throw malformed("key is not 16 hex digits") }
        guard let time = Int64(parts["ts"]!), time > 0 else { throw malformed("ts is not Unix seconds") }
        let nonce = parts["nonce"]!
        guard nonce.count == 2 * RequestSignature.nonceBytes, isHex(nonce) else {
            throw malformed("nonce is not \(2 * RequestSignature.nonceBytes) hex digits")
        }
        guard let mac = bytes(hex: parts["mac"]!), mac.count == 32 else { throw malformed("mac is not 64 hex digits") }
        return Credential(keyID: keyID, time: time, nonce: nonce, mac: mac)
    }

    private static func malformed(_ problem: String) -> AgentAPIError {
        .unauthenticated(
            .malformedCredentials,
            "the \(RequestSignature.scheme) credential cannot be read: \(problem); the client and the agent may be different Ferry versions"
        )
    }

    private static func isHex(_ text: String) -> Bool {
        text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    private static func bytes(hex text: String) -> [UInt8]? {
        guard text.utf8.count % 2 == 0, isHex(text) else { return nil }
        let digits = Array(text.utf8)
        return stride(from: 0, to: digits.count, by: 2).map { index in
            UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16)!
        }
    }
}
