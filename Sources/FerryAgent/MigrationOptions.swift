import FerryVMM

/// How an agent asks its guest's `ferry vmm` to migrate: the `migrate` operation's arguments
/// (docs/vmm-control.md), which are `ferry send`'s options. nil leaves the vmm's default.
public struct MigrationOptions: Sendable, Equatable {
    /// The shared key file the destination's `ferry vmm --incoming --key-file` expects.
    public var keyFile: String?
    public var encrypt = false
    public var downtimeMs: Double?
    public var maxRounds: Int?
    public var timeoutSeconds: Double?
    public var forceSwitchover = false
    public var autoConverge = true
    public var maxBandwidthBytesPerSecond: Double?
    public var streams: Int?
    /// `auto`, `lz4` or `none`.
    public var compression: String?

    public init(
        keyFile: String? = nil, encrypt: Bool = false, downtimeMs: Double? = nil, maxRounds: Int? = nil,
        timeoutSeconds: Double? = nil, forceSwitchover: Bool = false, autoConverge: Bool = true,
        maxBandwidthBytesPerSecond: Double? = nil, streams: Int? = nil, compression: String? = nil
    ) {
        self.keyFile = keyFile
        self.encrypt = encrypt
        self.downtimeMs = downtimeMs
        self.maxRounds = maxRounds
        self.timeoutSeconds = timeoutSeconds
        self.forceSwitchover = forceSwitchover
        self.autoConverge = autoConverge
        self.maxBandwidthBytesPerSecond = maxBandwidthBytesPerSecond
        self.streams = streams
        self.compression = compression
    }

    /// The `migrate` request's fields for destination `to` (HOST:PORT).
    func controlFields(to destination: String) -> [String: JSONValue] {
        var fields: [String: JSONValue] = [
            "to": .string(destination), "encrypt": .bool(encrypt), "force_switchover": .bool(forceSwitchover),
            "auto_converge": .bool(autoConverge),
        ]
        if let keyFile { fields["key_file"] = .string(keyFile) }
        if let downtimeMs { fields["downtime_ms"] = .number(downtimeMs) }
        if let maxRounds { fields["max_rounds"] = JSONValue(maxRounds) }
        if let timeoutSeconds { fields["timeout_s"] = .number(timeoutSeconds) }
        if let maxBandwidthBytesPerSecond { fields["max_bandwidth_bytes_per_s"] = .number(maxBandwidthBytesPerSecond) }
        if let streams { fields["streams"] = JSONValue(streams) }
        if let compression { fields["compression"] = .string(compression) }
        return fields
    }
}
