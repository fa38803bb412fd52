import FerryHostModel
import Foundation

/// What a cold migration's source tells the destination in its `configuration` step
/// (`POST /v1/migrations/incoming` with `cold`): the files that make the guest, and whether it
/// arrives suspended (docs/cold-migration.md).
public struct ColdMigrationOffer: Codable, Sendable, Equatable {
    public var files: [ColdFile]
    /// The guest was suspended on the source: it is registered `suspended` and resumed, not booted.
    public var suspended: Bool

    public init(files: [ColdFile], suspended: Bool) {
        self.files = files
        self.suspended = suspended
    }
}

/// One file of a cold-migrating guest.
public struct ColdFile: Codable, Sendable, Equatable {
    public enum Role: String, Codable, Sendable {
        /// One of the specification's disks (`name` is the disk's name).
        case disk
        /// A suspended guest's memory image.
        case memory
        /// A suspended guest's suspend record (its vCPU and device state).
        case suspend
    }

    /// The disk's name, or `memory` / `suspend`.
    public var name: String
    public var role: Role
    public var sizeBytes: Int
    /// What the file holds (`st_blocks`): what a move writes at most.
    public var allocatedBytes: Int
    /// Where the source keeps it.
    public var sourcePath: String
    /// The random token the source wrote into the file's `user.ferry.claim` attribute (hex): a
    /// destination that reads the same token at `source_path` sees the same file (shared storage).
    public var claim: String?

    public init(name: String, role: Role, sizeBytes: Int, allocatedBytes: Int, sourcePath: String, claim: String?) {
        self.name = name
        self.role = role
        self.sizeBytes = sizeBytes
        self.allocatedBytes = allocatedBytes
        self.sourcePath = sourcePath
        self.claim = claim
    }

    enum CodingKeys: String, CodingKey {
        case name, role, claim
        case sizeBytes = "size_bytes"
        case allocatedBytes = "allocated_bytes"
        case sourcePath = "source_path"
    }
}

/// Where the destination keeps one file of a cold migration, and whether it must be moved.
public struct ColdFilePlacement: Codable, Sendable, Equatable {
    public var name: String
    public var path: String
    /// The destination read the source's claim token at the same path: nothing is copied.
    public var shared: Bool
    /// An older copy of this disk the destination kept (a `keep_source` migration of the same
    /// guest away from it): the move starts from it and sends only the blocks that differ
    /// (Protocol.md 10.8). It is `path` itself, replaced once the new copy verified.
    public var base: String?

    public init(name: String, path: String, shared: Bool, base: String? = nil) {
        self.name = name
        self.path = path
        self.shared = shared
        self.base = base
    }
}

/// `POST /v1/migrations/incoming/{id}/files/{name}`: where the destination's disk-move receiver
/// for that file listens (Protocol.md section 10), or that it holds the file verified already.
public struct ColdFileReceipt: Codable, Sendable, Equatable {
    public var name: String
    /// HOST:PORT of the receiver; nil when `done`.
    public var address: String?
    /// The file was received and verified earlier (a retried request).
    public var done: Bool

    public init(name: String, address: String?, done: Bool) {
        self.name = name
        self.address = address
        self.done = done
    }
}

extension AgentClient {
    /// Asks the destination to receive one file of a cold migration.
    public func receiveColdFile(migrationID: String, name: String) throws(AgentClientError) -> ColdFileReceipt {
        let target = "/v1/migrations/incoming/\(migrationID)/files/\(name)"
        return try Self.decodeExchange(ColdFileReceipt.self, try checked(send("POST", target)), target: target)
    }

    /// The registration: the destination becomes the guest's owner (idempotent by migration ID).
    public func registerIncoming(migrationID: String) throws(AgentClientError) -> IncomingMigrationStatus {
        let target = "/v1/migrations/incoming/\(migrationID)/register"
        return try Self.decodeExchange(IncomingMigrationStatus.self, try checked(send("POST", target)), target: target)
    }
}
