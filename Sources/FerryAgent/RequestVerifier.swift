import Foundation
import Synchronization

/// The agent's side of `RequestSignature`: checks a request's credential and refuses a replay.
///
/// A credential is accepted once, only while its time is within `window` of the agent's clock
/// and not before the agent started (the nonces seen are kept in memory: without that rule a
/// request captured just before a restart could be replayed just after it). Each nonce is kept
/// until its time leaves the window; at most `capacity` are kept, and when that many requests
/// arrived within one window the next is refused with 503 rather than remembered badly.
///
/// Checks run in this order, so that nothing unauthenticated reaches the nonce cache (nor learns
/// the agent's addresses): the header's form, the key's ID, the time, a `Host` header, the MAC
/// (over that `Host`), the audience (the `Host` names this agent: `RequestAudience`), then the
/// nonce.
public final class RequestVerifier: Sendable {
    public let signature: RequestSignature
    /// How far a credential's time may be from the agent's clock, either way.
    public let windowSeconds: Int64
    /// The earliest credential time accepted: when the agent started (Unix seconds).
    public let notBefore: Int64
    public let capacity: Int
    private let seen = Mutex<[String: Int64]>([:])
    private let audience: Mutex<RequestAudience?>

    /// `audience` nil: set it with `serve(_:)` once the API's port is known (until then every
    /// request is a 503).
    public init(
        signature: RequestSignature, windowSeconds: Int64 = 30, notBefore: Int64, capacity: Int = 100_000,
        audience: RequestAudience? = nil
    ) {
        self.signature = signature
        self.windowSeconds = windowSeconds
        self.notBefore = notBefore
        self.capacity = capacity
        self.audience = Mutex(audience)
    }

    /// The `Host` headers this agent accepts from now on.
    public func serve(_ audience: RequestAudience) {
        self.audience.withLock { $0 = audience }
    }

    /// Throws the 401 (or 503) that the request gets, or returns when it may go on. `host` is
    /// the request's `Host` header (nil when it has none, or "" when it has two).
    public func verify(
        authorization: String?, method: String, host: String?, target: String, body: some Collection<UInt8>,
        now: Int64 = Int64(Date().timeIntervalSince1970)
    ) throws(AgentAPIError) {
        let credential = try Credential.parse(authorization)
        guard credential.keyID == signature.keyID else {
            throw .unauthenticated(
                .wrongKey,
                "the request was signed with key \(credential.keyID), this agent's key is \(signature.keyID): use the agent's --key-file"
            )
        }
        try checkTime(credential.time, now: now)
        guard let host, !host.isEmpty else {
            throw .unauthenticated(
                .wrongAudience,
                "the request has \(host == nil ? "no Host header" : "more than one Host header"): send exactly one, the agent's HOST:PORT as addressed, and sign it"
            )
        }
        guard
            signature.isValid(
                mac: credential.mac, method: method, host: host, target: target, time: credential.time,
                nonce: credential.nonce, bodyDigest: RequestSignature.digest(body))
        else {
            throw .unauthenticated(
                .badSignature,
                "the signature does not match this request (method, Host, path, time, nonce or body differ from what was signed): it was altered on the way, or signed for another request"
            )
        }
        try checkAudience(host)
        try remember(credential.nonce, time: credential.time, now: now)
    }

    /// A correctly signed request for another agent (its `Host` is not this one's) is refused:
    /// it is a replay from another agent sharing the key, or a client that addressed this agent
    /// by a name it does not know.
    private func checkAudience(_ host: String) throws(AgentAPIError) {
        guard var current = audience.withLock({ $0 }) else {
            throw AgentAPIError(.serviceUnavailable, .unavailable, "the agent is starting; retry in a moment")
        }
        if current.accepts(host) { return }
        if current.wildcard {
            current = current.refreshed()
            audience.withLock { $0 = current }
            if current.accepts(host) { return }
        }
        throw .unauthenticated(
            .wrongAudience,
            "the request was signed for Host \(host.prefix(100)), which is not this agent: it serves \(current.served.joined(separator: ", ")); address the agent as one of those (a request signed for another agent is never accepted here)"
        )
    }

    private func checkTime(_ time: Int64, now: Int64) throws(AgentAPIError) {
        let skew = time - now
        guard abs(skew) <= windowSeconds else {
            throw .unauthenticated(
                .staleCredentials,
                "the credential's time is \(abs(skew)) s \(skew < 0 ? "behind" : "ahead of") this agent's clock (at most \(windowSeconds) s either way): set both clocks right (NTP), or it is a replay"
            )
        }
        guard time >= notBefore else {
            throw .unauthenticated(
                .staleCredentials,
                "the credential was made before this agent started (\(notBefore - time) s earlier): sign the request again"
            )
        }
    }

    private func remember(_ nonce: String, time: Int64, now: Int64) throws(AgentAPIError) {
        let outcome = seen.withLock { seen -> AgentAPIError? in
            if seen[nonce] != nil {
                return .unauthenticated(
                    .replayedCredentials,
                    "this credential was used before (a replayed request); every request needs a fresh nonce")
            }
            if seen.count >= capacity {
                let oldest = now - windowSeconds
                seen = seen.filter { $0.value >= oldest }
            }
            guard seen.count < capacity else {
                return AgentAPIError(
                    .serviceUnavailable, .unavailable,
                    "more than \(capacity) requests in \(windowSeconds) s: the agent cannot remember more nonces to refuse replays; retry later"
                )
            }
            seen[nonce] = time
            return nil
        }
        if let outcome { throw outcome }
    }

    /// How many nonces are remembered now (for tests).
    var rememberedCount: Int { seen.withLock { $0.count } }
}
