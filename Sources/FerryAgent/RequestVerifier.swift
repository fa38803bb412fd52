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
/// Checks run in this order, so that nothing unauthenticated reaches the nonce cache: the
/// header's form, the key's ID, the time, the MAC, then the nonce.
public final class RequestVerifier: Sendable {
    public let signature: RequestSignature
    /// How far a credential's time may be from the agent's clock, either way.
    public let windowSeconds: Int64
    /// The earliest credential time accepted: when the agent started (Unix seconds).
    public let notBefore: Int64
    public let capacity: Int
    private let seen = Mutex<[String: Int64]>([:])

    public init(signature: RequestSignature, windowSeconds: Int64 = 30, notBefore: Int64, capacity: Int = 100_000) {
        self.signature = signature
        self.windowSeconds = windowSeconds
        self.notBefore = notBefore
        self.capacity = capacity
    }

    /// Throws the 401 (or 503) that the request gets, or returns when it may go on.
    public func verify(
        authorization: String?, method: String, target: String, body: some Collection<UInt8>,
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
        guard
            signature.isValid(
                mac: credential.mac, method: method, target: target, time: credential.time, nonce: credential.nonce,
                bodyDigest: RequestSignature.digest(body))
        else {
            throw .unauthenticated(
                .badSignature,
                "the signature does not match this request (method, path, time, nonce or body differ from what was signed): it was altered on the way, or signed for another request"
            )
        }
        try remember(credential.nonce, time: credential.time, now: now)
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
