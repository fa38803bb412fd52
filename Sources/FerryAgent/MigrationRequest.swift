import FerryHostModel
import Foundation

/// `POST /v1/migrations`: live-migrate a guest of this agent to another agent.
public struct MigrationRequest: Codable, Sendable, Equatable {
    /// How the guest's vmm migrates (`migrate`'s arguments, docs/vmm-control.md). nil: the vmm's default.
    public struct Options: Codable, Sendable, Equatable {
        public var downtimeMs: Double?
        public var maxRounds: Int?
        public var timeoutSeconds: Double?
        public var forceSwitchover: Bool?
        public var autoConverge: Bool?
        public var maxBandwidthBytesPerSecond: Double?
        public var streams: Int?
        public var compression: String?
        public var encrypt: Bool?
        /// Cold: the source keeps the guest's files until `confirm`.
        public var keepSource: Bool?
        /// Cold: how long a running guest has to shut down gracefully (default 30 s).
        public var shutdownTimeoutSeconds: Int?
        /// Cold: start a guest that was stopped on the destination too (a running guest is
        /// started, a suspended one resumed, always).
        public var powerOn: Bool?

        enum CodingKeys: String, CodingKey {
            case keepSource = "keep_source"
            case shutdownTimeoutSeconds = "shutdown_timeout_s"
            case powerOn = "power_on"
            case downtimeMs = "downtime_ms"
            case maxRounds = "max_rounds"
            case timeoutSeconds = "timeout_s"
            case forceSwitchover = "force_switchover"
            case autoConverge = "auto_converge"
            case maxBandwidthBytesPerSecond = "max_bandwidth_bytes_per_s"
            case streams, compression, encrypt
        }

        public init(
            downtimeMs: Double? = nil, maxRounds: Int? = nil, timeoutSeconds: Double? = nil,
            forceSwitchover: Bool? = nil, autoConverge: Bool? = nil, maxBandwidthBytesPerSecond: Double? = nil,
            streams: Int? = nil, compression: String? = nil, encrypt: Bool? = nil
        ) {
            self.downtimeMs = downtimeMs
            self.maxRounds = maxRounds
            self.timeoutSeconds = timeoutSeconds
            self.forceSwitchover = forceSwitchover
            self.autoConverge = autoConverge
            self.maxBandwidthBytesPerSecond = maxBandwidthBytesPerSecond
            self.streams = streams
            self.compression = compression
            self.encrypt = encrypt
        }

        /// The first field out of range, as the API spells it.
        func validate() throws(HostModelError) {
            func check(_ ok: Bool, _ field: String, _ message: String) throws(HostModelError) {
                if !ok { throw HostModelError(field: "options.\(field)", message) }
            }
            try check(downtimeMs.map { $0 > 0 && $0 <= 60_000 } ?? true, "downtime_ms", "1 to 60000 ms")
            try check(maxRounds.map { (1...100_000).contains($0) } ?? true, "max_rounds", "1 to 100000")
            try check(timeoutSeconds.map { $0 > 0 && $0 <= 86_400 } ?? true, "timeout_s", "above 0, at most 86400")
            try check(maxBandwidthBytesPerSecond.map { $0 >= 1 } ?? true, "max_bandwidth_bytes_per_s", "at least 1")
            try check(streams.map { (1...16).contains($0) } ?? true, "streams", "1 to 16")
            try check(
                compression.map { ["auto", "lz4", "none"].contains($0) } ?? true, "compression",
                "auto, lz4 or none")
            try check(shutdownTimeoutSeconds.map { (1...3600).contains($0) } ?? true, "shutdown_timeout_s", "1 to 3600")
        }

        /// The driver's options; `keyFile`: the shared key both vmms authenticate with.
        func driverOptions(keyFile: String?) -> MigrationOptions {
            MigrationOptions(
                keyFile: keyFile, encrypt: encrypt ?? false, downtimeMs: downtimeMs, maxRounds: maxRounds,
                timeoutSeconds: timeoutSeconds, forceSwitchover: forceSwitchover ?? false,
                autoConverge: autoConverge ?? true, maxBandwidthBytesPerSecond: maxBandwidthBytesPerSecond,
                streams: streams, compression: compression)
        }
    }

    /// The guest's name on this agent.
    public var guest: String
    /// The destination agent, http://HOST:PORT.
    public var to: String
    /// `live` (nil) or `cold` (docs/cold-migration.md).
    public var kind: String?
    public var options: Options?

    public init(guest: String, to: String, kind: String? = nil, options: Options? = nil) {
        self.guest = guest
        self.to = to
        self.kind = kind
        self.options = options
    }
}

extension MigrationRequest: ValidatedRequestBody {
    public func validate() throws(HostModelError) {
        do { _ = try GuestName(guest) } catch { throw HostModelError(field: "guest", error.message) }
        do throws(AgentClientError) { _ = try AgentClient.parse(to) } catch {
            throw HostModelError(field: "to", error.message)
        }
        if let kind, !["live", "cold"].contains(kind) {
            throw HostModelError(field: "kind", "live or cold, got \"\(kind)\"")
        }
        try options?.validate()
    }
}

extension IncomingMigrationRequest: ValidatedRequestBody {
    public func validate() throws(HostModelError) {
        guard !migrationID.isEmpty, migrationID.count <= 64,
            migrationID.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
        else { throw HostModelError(field: "migration_id", "1 to 64 letters, digits or -") }
        try specification.validate()
    }
}

/// `GET /v1/migrations`.
public struct MigrationList: Codable, Sendable {
    public var migrations: [MigrationResource]

    public init(migrations: [MigrationResource]) { self.migrations = migrations }
}
