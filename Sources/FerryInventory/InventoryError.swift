import FerryHostModel

/// Why an inventory operation was refused or failed. `message` names the guest, what was asked
/// and what to do; `cause` keeps the underlying error (SQLite's) as a value.
public struct InventoryError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// No guest by that name or ID.
        case notFound
        /// A guest with that name or ID already exists.
        case alreadyExists
        /// The specification is out of range (see `HostModelError.field`).
        case invalidSpecification
        /// `GuestState.allows(_:)` refuses the change.
        case transitionRefused
        /// The guest is no longer in the state or generation the caller read: someone else
        /// changed it first (optimistic concurrency). Read it again and decide again.
        case stale
        /// Removal refused: the guest's state may have a process (stop it first), or a handoff
        /// removal of a guest that is not `migrating-out`.
        case notRemovable
        /// The database file is not a SQLite database, is damaged, or was written by a newer
        /// Ferry whose schema this one does not know.
        case unusableDatabase
        /// Any other SQLite failure (I/O error, full disk, lock held too long).
        case database
        /// An arriving guest does not fit: the host lacks the vCPUs or memory it needs.
        case insufficientCapacity
    }

    public let code: Code
    public let message: String
    /// The error underneath, as text (SQLite's result code and message), if any.
    public let cause: String?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause.map { String(describing: $0) }
    }

    public var description: String {
        guard let cause else { return message }
        return "\(message) (\(cause))"
    }
}
