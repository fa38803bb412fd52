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
    /// `cold` for a cold migration (docs/cold-migration.md); nil: live.
    public var kind: String?
    /// A cold migration's steps and what each took: `shutdown`, `configuration`, `disks`,
    /// `registration`, `power_on`.
    public var phasesMs: [String: Double]?
    /// A cold migration's service interruption: from the shutdown request to the destination
    /// guest's first line from its disk (nil when the guest was not running).
    public var interruptionMs: Double?
    /// A cold migration's files, as moved (or found shared).
    public var files: [ColdFileReport]?
    /// The source keeps the guest's files until `POST /v1/migrations/{id}/confirm`.
    public var keepSource: Bool?
    /// Files the source kept (`keep_source`), removed by `confirm`.
    public var retained: [String]?
    /// The destination guest's console line that showed it resumed from its disk.
    public var resumedLine: String?

    /// One file of a cold migration.
    public struct ColdFileReport: Codable, Sendable, Equatable {
        public var name: String
        public var sizeBytes: Int
        public var allocatedBytes: Int
        /// Both hosts see the file: nothing was copied.
        public var shared: Bool
        public var wireBytes: UInt64
        public var milliseconds: Double
        public var resumes: Int

        public init(
            name: String, sizeBytes: Int, allocatedBytes: Int, shared: Bool, wireBytes: UInt64 = 0,
            milliseconds: Double = 0, resumes: Int = 0
        ) {
            self.name = name
            self.sizeBytes = sizeBytes
            self.allocatedBytes = allocatedBytes
            self.shared = shared
            self.wireBytes = wireBytes
            self.milliseconds = milliseconds
            self.resumes = resumes
        }

        enum CodingKeys: String, CodingKey {
            case name, shared, resumes, milliseconds
            case sizeBytes = "size_bytes"
            case allocatedBytes = "allocated_bytes"
            case wireBytes = "wire_bytes"
        }
    }

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
        case kind, files, retained
        case phasesMs = "phases_ms"
        case interruptionMs = "interruption_ms"
        case keepSource = "keep_source"
        case resumedLine = "resumed_line"
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
