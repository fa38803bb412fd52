import Crypto
import FerryTransport
import Testing

@testable import FerryAgent

/// The API's credential (`RequestSignature`, `RequestVerifier`): every way a request can fail to
/// prove it holds the key, and the replay rules.
struct RequestSignatureTests {
    static let key = try! SharedKey(bytes: Array(1...32))
    static let otherKey = try! SharedKey(bytes: Array(2...33))
    let signature = RequestSignature(key: Self.key)
    let now: Int64 = 1_800_000_000

    static let host = "127.0.0.1:7460"
    static let audience = RequestAudience(
        listen: Endpoint(host: "127.0.0.1", port: 7460), interfaces: [], hostname: nil)

    func verifier(window: Int64 = 30, capacity: Int = 100) -> RequestVerifier {
        RequestVerifier(
            signature: signature, windowSeconds: window, notBefore: now - 100, capacity: capacity,
            audience: Self.audience)
    }

    func header(
        _ method: String = "POST", _ target: String = "/v1/guests", body: String = "{}", time: Int64? = nil,
        host: String = Self.host, with signature: RequestSignature? = nil
    ) -> String {
        (signature ?? self.signature).authorization(
            method: method, host: host, target: target, body: Array(body.utf8), time: time ?? now)
    }

    func failure(
        _ verifier: RequestVerifier, _ authorization: String?, method: String = "POST", host: String? = Self.host,
        target: String = "/v1/guests", body: String = "{}"
    ) -> AgentAPIError? {
        do throws(AgentAPIError) {
            try verifier.verify(
                authorization: authorization, method: method, host: host, target: target, body: Array(body.utf8),
                now: now)
            return nil
        } catch {
            return error
        }
    }

    @Test func aSignedRequestIsAcceptedOnce() {
        let verifier = verifier()
        let credential = header()
        #expect(failure(verifier, credential) == nil)
        let replay = failure(verifier, credential)
        #expect(replay?.code == .replayedCredentials)
        #expect(replay?.status == .unauthorized)
        // A fresh credential for the same request is fine.
        #expect(failure(verifier, header()) == nil)
    }

    @Test func theCredentialCoversMethodTargetAndBody() {
        let verifier = verifier()
        let credential = header("POST", "/v1/guests", body: #"{"name":"a"}"#)
        #expect(failure(verifier, credential, method: "DELETE", body: #"{"name":"a"}"#)?.code == .badSignature)
        #expect(
            failure(verifier, credential, target: "/v1/guests?force=1", body: #"{"name":"a"}"#)?.code == .badSignature)
        #expect(failure(verifier, credential, body: #"{"name":"b"}"#)?.code == .badSignature)
        // The rejected attempts did not use the nonce up: the genuine request still goes through.
        #expect(failure(verifier, credential, body: #"{"name":"a"}"#) == nil)
    }

    @Test func anotherKeyIsNamedAsSuch() {
        let other = RequestSignature(key: Self.otherKey)
        #expect(other.keyID != signature.keyID)
        let error = failure(verifier(), header(with: other))
        #expect(error?.code == .wrongKey)
        #expect(error?.message.contains(signature.keyID) == true)
    }

    @Test func aMACMadeWithTheRawKeyDoesNotVerify() {
        // The API's key is derived from the shared key: a MAC under the key itself (as the
        // migration handshake makes) is useless here. Forge one with the right key ID.
        let credential = header()
        let text = [
            "ferry-agent-api v1", "POST", Self.host, "/v1/guests", String(now), "00112233445566778899aabbccddeeff",
            RequestSignature.digest(Array("{}".utf8)),
        ].joined(separator: "\n")
        let raw = SymmetricKey(data: Array(1...32) as [UInt8])
        let mac = RequestSignature.hex(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: raw))
        let forged =
            "Ferry-HMAC-SHA256 key=\(signature.keyID), ts=\(now), nonce=00112233445566778899aabbccddeeff, mac=\(mac)"
        #expect(failure(verifier(), forged)?.code == .badSignature)
        #expect(failure(verifier(), credential) == nil)
    }

    @Test func credentialsOutsideTheWindowAreStale() {
        let verifier = verifier(window: 30)
        #expect(failure(verifier, header(time: now - 31))?.code == .staleCredentials)
        #expect(failure(verifier, header(time: now + 31))?.code == .staleCredentials)
        #expect(failure(verifier, header(time: now - 30)) == nil)
        #expect(failure(verifier, header(time: now + 30)) == nil)
    }

    @Test func credentialsFromBeforeTheAgentStartedAreRefused() {
        let verifier = RequestVerifier(signature: signature, windowSeconds: 30, notBefore: now, audience: Self.audience)
        let error = failure(verifier, header(time: now - 5))
        #expect(error?.code == .staleCredentials)
        #expect(error?.message.contains("before this agent started") == true)
    }

    @Test(arguments: [
        ("", AgentAPIError.Code.missingCredentials),
        ("Bearer abc", .missingCredentials),
        ("Ferry-HMAC-SHA256", .malformedCredentials),
        ("Ferry-HMAC-SHA256 key=0011223344556677", .malformedCredentials),
        (
            "Ferry-HMAC-SHA256 key=0011223344556677, ts=1800000000, nonce=00112233445566778899aabbccddeeff, mac=zz",
            .malformedCredentials
        ),
        (
            "Ferry-HMAC-SHA256 key=0011223344556677, ts=now, nonce=00112233445566778899aabbccddeeff, mac=\(String(repeating: "0", count: 64))",
            .malformedCredentials
        ),
        (
            "Ferry-HMAC-SHA256 key=0011223344556677, key=0011223344556677, ts=1800000000, nonce=00112233445566778899aabbccddeeff, mac=\(String(repeating: "0", count: 64))",
            .malformedCredentials
        ),
        (
            "Ferry-HMAC-SHA256 key=0011223344556677, ts=1800000000, nonce=0011, mac=\(String(repeating: "0", count: 64))",
            .malformedCredentials
        ),
    ])
    func malformedCredentials(header: String, code: AgentAPIError.Code) {
        let error = failure(verifier(), header)
        #expect(error?.code == code)
        #expect(error?.status == .unauthorized)
    }

    @Test func noHeaderAtAll() {
        #expect(failure(verifier(), nil)?.code == .missingCredentials)
    }

    @Test func aFullReplayCacheRefusesWith503AndForgetsOldNonces() {
        let verifier = verifier(window: 30, capacity: 3)
        for _ in 0..<3 { #expect(failure(verifier, header()) == nil) }
        let full = failure(verifier, header())
        #expect(full?.code == .unavailable)
        #expect(full?.status == .serviceUnavailable)
        // Nonces whose time has left the window are dropped to make room.
        let later = RequestVerifier(
            signature: signature, windowSeconds: 30, notBefore: now - 100, capacity: 3, audience: Self.audience)
        for _ in 0..<3 { #expect(failure(later, header(time: now - 30)) == nil) }
        do throws(AgentAPIError) {
            try later.verify(
                authorization: header(time: now + 1), method: "POST", host: Self.host, target: "/v1/guests",
                body: Array("{}".utf8), now: now + 1)
        } catch {
            Issue.record("a nonce from outside the window still counted: \(error.message)")
        }
        #expect(later.rememberedCount == 1)
    }

    @Test func theHeaderRoundTrips() throws {
        let nonce: [UInt8] = Array(0..<16)
        let text = signature.authorization(
            method: "GET", host: Self.host, target: "/v1/host", body: [], time: 42, nonce: nonce)
        let credential = try Credential.parse(text)
        #expect(credential.keyID == signature.keyID)
        #expect(credential.time == 42)
        #expect(credential.nonce == "000102030405060708090a0b0c0d0e0f")
        #expect(
            signature.isValid(
                mac: credential.mac, method: "GET", host: Self.host, target: "/v1/host", time: 42,
                nonce: credential.nonce, bodyDigest: RequestSignature.digest([UInt8]())))
    }
    @Test func theCredentialCoversTheHost() {
        let verifier = verifier()
        let credential = header(host: "127.0.0.1:7461")
        // Signed for another port of this host: the MAC holds, the audience does not.
        let elsewhere = failure(verifier, credential, host: "127.0.0.1:7461")
        #expect(elsewhere?.code == .wrongAudience)
        #expect(elsewhere?.message.contains("127.0.0.1:7461") == true)
        #expect(elsewhere?.message.contains("127.0.0.1:7460") == true)
        // The Host rewritten to this agent after signing: the MAC no longer matches.
        #expect(failure(verifier, credential, host: Self.host)?.code == .badSignature)
        #expect(failure(verifier, header(), host: nil)?.code == .wrongAudience)
        #expect(failure(verifier, header(), host: "")?.code == .wrongAudience)
        // None of those used a nonce up.
        #expect(failure(verifier, header()) == nil)
        #expect(verifier.rememberedCount == 1)
    }

    @Test(arguments: [
        ("127.0.0.1:7460", "127.0.0.1:7460", true), ("127.0.0.1:7460", "localhost:7460", true),
        ("127.0.0.1:7460", "[::1]:7460", true), ("127.0.0.1:7460", "[0:0::1]:7460", true),
        ("127.0.0.1:7460", "LOCALHOST:7460", true), ("127.0.0.1:7460", "127.0.0.1:7461", false),
        ("127.0.0.1:7460", "127.0.0.1", false), ("127.0.0.1:7460", "10.0.0.5:7460", false),
        ("10.0.0.5:7460", "10.0.0.5:7460", true), ("10.0.0.5:7460", "127.0.0.1:7460", false),
        ("10.0.0.5:7460", "localhost:7460", false), ("10.0.0.5:7460", "10.0.0.6:7460", false),
        ("0.0.0.0:7460", "10.0.0.5:7460", true), ("0.0.0.0:7460", "127.0.0.1:7460", true),
        ("0.0.0.0:7460", "[::1]:7460", true), ("0.0.0.0:7460", "node-1:7460", true),
        ("0.0.0.0:7460", "Node-1.:7460", true), ("0.0.0.0:7460", "10.0.0.6:7460", false),
        ("[::]:7460", "[fd00::5]:7460", true), ("[::]:7460", "[fd00::6]:7460", false),
        ("0.0.0.0:80", "10.0.0.5", true), ("0.0.0.0:7460", "x@10.0.0.5:7460", false),
    ])
    func theAudienceIsTheListenAddresses(listen: String, host: String, accepted: Bool) throws {
        let audience = RequestAudience(
            listen: try Endpoint.parse(listen), interfaces: ["10.0.0.5", "fd00::5", "127.0.0.1", "::1"],
            hostname: "node-1")
        #expect(audience.accepts(host) == accepted, "\(listen) given Host \(host)")
    }
}
