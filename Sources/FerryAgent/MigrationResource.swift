import Foundation

/// A migration as the API returns it (docs/agent-api.yaml, schema `Migration`): what QEMU's
/// `query-migrate` says and more. The source agent's `OutgoingMigrationDriver` keeps one up to
/// date from its guest's `ferry vmm`; once `status` is final it never changes again.
public struct MigrationResource: Codable, Sendable, Equatable {
    public enum Direction: String, Codable, Sendable {
        case out
        case `in`
    }

    /// Where a migration stands. The last four are final; one of them is recorded once.
    public enum Status: String, Codable, Sendable, CaseIterable {
        /// `migrate` was sent; the vmm has not reported a round yet.
        case setup
        /// Pages are moving.
        case active
        /// A cancel was sent; the vmm has not said how the migration ended.
        case cancelling
        /// The guest runs on the destination.
        case completed
        /// The migration failed; the guest runs on the source (`guest_location` says so).
        case failed
        /// Cancelled; the guest runs on the source.
        case cancelled
        /// The handoff's outcome is unknown (or the source vmm vanished mid-migration): the
        /// destination's answer resolves it, nothing else does (docs/agent.md).
        case unresolved

        public var isFinal: Bool { [.completed, .failed, .cancelled, .unresolved].contains(self) }
    }

    public var id: String
    public var guest: String
    public var direction: Direction
    /// The other agent (http://HOST:PORT), when an agent asked for the migration.
    public var peer: String?
    /// The destination's migration address (its `ferry vmm --incoming`), HOST:PORT.
    public var destination: String
    public var status: Status
    /// The vmm's phase: `starting`, `precopy`, `reconnecting`, `completed`, `failed`, `cancelled`.
    public var phase: String
    public var round: Int?
    public var bytesTransferred: UInt64?
    /// Bytes of the current round still to send.
    public var bytesRemaining: UInt64?
    public var dirtyRateBytesPerSecond: Double?
    public var sendRateBytesPerSecond: Double?
    public var expectedDowntimeMs: Double?
    public var throttlePercent: Double?
    public var elapsedSeconds: Double?
    public var etaSeconds: Double?
    /// What failed and where the guest is.
    public var error: String?
    public var startedAt: Date
    public var endedAt: Date?
    // Once ended:
    public var rounds: Int?
    public var downtimeMs: Double?
    public var totalTimeMs: Double?
    /// Of the total, what the source's engine took before its first page (the tracker's setup).
    public var setupMs: Double?
    /// The CPU time the source's engine used (all its threads).
    public var cpuMs: Double?
    /// The source's rounds, the last one the blackout's.
    public var perRound: [Round]?
    /// `source`, `destination` or `unknown` (unresolved).
    public var guestLocation: String?

    /// One round as the source's engine recorded it.
    public struct Round: Codable, Sendable, Equatable {
        public var round: Int
        public var pages: Int
        public var wireBytes: UInt64
        /// From the round's start to its acknowledgement (harvest and wait included).
        public var durationMs: Double
        /// Of that, the time its pages took to write.
        public var sendingMs: Double
        /// Pages dirtied while the round was sent: the next round's work.
        public var dirtyPages: Int
        public var throttlePercent: Int
        /// The convergence decision at the round's end (`continue`, `blackout`, ...).
        public var decision: String

        enum CodingKeys: String, CodingKey {
            case round, pages, decision
            case wireBytes = "wire_bytes"
            case durationMs = "duration_ms"
            case sendingMs = "sending_ms"
            case dirtyPages = "dirty_pages"
            case throttlePercent = "throttle_percent"
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, guest, direction, peer, destination, status, phase, round
        case bytesTransferred = "bytes_transferred"
        case bytesRemaining = "bytes_remaining"
        case dirtyRateBytesPerSecond = "dirty_rate_bytes_per_second"
        case sendRateBytesPerSecond = "send_rate_bytes_per_second"
        case expectedDowntimeMs = "expected_downtime_ms"
        case throttlePercent = "throttle_percent"
        case elapsedSeconds = "elapsed_s"
        case etaSeconds = "eta_s"
        case error
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case rounds
        case downtimeMs = "downtime_ms"
        case totalTimeMs = "total_time_ms"
        case setupMs = "setup_ms"
        case cpuMs = "cpu_ms"
        case perRound = "per_round"
        case guestLocation = "guest_location"
    }

    public init(id: String, guest: String, direction: Direction, peer: String?, destination: String) {
        self.id = id
        self.guest = guest
        self.direction = direction
        self.peer = peer
        self.destination = destination
        status = .setup
        phase = "starting"
        startedAt = Date()
    }

    /// The resource as the API's JSON (dates ISO 8601, keys sorted).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public static func decode(_ text: String) throws -> MigrationResource {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(MigrationResource.self, from: Data(text.utf8))
    }
}
