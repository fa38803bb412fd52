/// Why a control-plane operation was refused or failed. `message` names what was asked and what
/// to do; `cause` keeps the underlying error (SQLite's) as text.
public struct ControlError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// No host, flavor, image, project or guest by that name or ID.
        case notFound
        /// A flavor, image or project of that name already exists.
        case alreadyExists
        /// A value out of range (a negative capacity, an empty name, a price below zero).
        case invalidArgument
        /// `CloudGuestState.allows(_:)` refuses the change.
        case transitionRefused
        /// The guest is no longer in the state or generation the caller read: read it again.
        case stale
        /// The same client token came with a different request (EC2's
        /// `IdempotentParameterMismatch`; HTTP 409).
        case clientTokenMismatch
        /// The project's quota has no room for the guest.
        case quotaExceeded
        /// No healthy host has the free capacity the flavor needs.
        case insufficientCapacity
        /// A host already has as many moves (live migrations in or out) under way as the
        /// controller's `--max-moves-per-host` allows (HTTP 409): wait for one to end.
        case moveLimit
        /// No valid session or API token: it is unknown, expired, revoked or ended by logout (HTTP
        /// 401: log in again).
        case unauthenticated
        /// Wrong user name or password (HTTP 401; which of the two is never said).
        case wrongCredentials
        /// The principal may see the resource but not do this to it (HTTP 403). A resource the
        /// principal may not even see is `notFound`.
        case forbidden
        /// Too many failed logins for this user name or client address: `retryAfter` says how long
        /// to wait (HTTP 429 with Retry-After).
        case throttled
        /// The database file is not a SQLite database, is damaged, or has a newer schema.
        case unusableDatabase
        /// Any other SQLite failure (I/O error, full disk, lock held too long).
        case database
    }

    public let code: Code
    public let message: String
    /// The error underneath, as text (SQLite's result code and message), if any.
    public let cause: String?
    /// For `throttled`: how long to wait before the next attempt.
    public let retryAfter: Duration?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil, retryAfter: Duration? = nil) {
        self.code = code
        self.message = message
        self.cause = cause.map { String(describing: $0) }
        self.retryAfter = retryAfter
    }

    public var description: String {
        guard let cause else { return message }
        return "\(message) (\(cause))"
    }
}
