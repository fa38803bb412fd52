import FerrySystem
import Synchronization

/// How the dispatcher admitted a `HELLO` (Protocol.md section 9.5).
enum HelloAdmission: Sendable {
    /// Authenticated (the destination has a key): the session holds a slot in the registry
    /// from now on; its host releases it when the session ends.
    case established
    /// Without a key: a tentative place in the registry (`SessionRegistry.admitTentative`),
    /// nothing else. The session claims its slot, its host's `HostClaim` and its disk only once
    /// its `GUEST_CONFIG` and the first frame after it arrived within
    /// `DestinationSession.establishTimeout` of its `ACCEPT`; `deadlines` closes its connection
    /// when they do not.
    case tentative(ConnectionDeadlines)
}

/// What a host gives a session when it is established, besides its slot: a server the guest's
/// name (one guest of a name at a time), a one-shot agent its single migration.
struct HostClaim: Sendable {
    /// Claims; nil, or why the host cannot (the session is then aborted with that message).
    var claim: @Sendable () -> String?
    /// Gives back what `claim` took.
    var release: @Sendable () -> Void

    static let none = HostClaim(claim: { nil }, release: {})
}

/// A `--prealloc` image, for whichever session is established first (guarded by a `Mutex`).
final class PreparedImage: Sendable {
    private let region: Mutex<MappedRegion?>
    let seconds: Double

    init(_ region: consuming sending MappedRegion?, seconds: Double) {
        self.region = Mutex(region)
        self.seconds = seconds
    }

    func take() -> MappedRegion? {
        region.withLock { $0.take() }
    }
}
