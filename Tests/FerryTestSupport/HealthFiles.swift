import Foundation

/// Writes a host's hardware signals into a health directory as `ferry agent --health-dir` reads
/// them (docs/agent.md, "Health directory"), each file replaced whole (written aside, renamed).
public struct HealthFiles: Sendable {
    public let directory: String

    public init(_ directory: String) {
        self.directory = directory
    }

    /// `edac/mc/mcN/ce_count` and `ue_count`.
    public func memoryController(_ index: Int, corrected: Int64, uncorrected: Int64) throws {
        try write("edac/mc/mc\(index)/ce_count", "\(corrected)\n")
        try write("edac/mc/mc\(index)/ue_count", "\(uncorrected)\n")
    }

    /// One SMART attribute as `smartctl --json -A` prints it.
    public struct Attribute: Sendable {
        public var id: Int
        public var name: String
        public var value: Int
        public var threshold: Int
        public var raw: Int64

        public init(_ id: Int, _ name: String, value: Int, threshold: Int, raw: Int64 = 0) {
            self.id = id
            self.name = name
            self.value = value
            self.threshold = threshold
            self.raw = raw
        }
    }

    /// `smart/NAME.json` in `smartctl --json -A`'s shape.
    public func smart(_ name: String, _ attributes: [Attribute]) throws {
        let rows = attributes.map { attribute in
            """
                  {"id": \(attribute.id), "name": "\(attribute.name)", "value": \(attribute.value), \
            "worst": \(attribute.value), "thresh": \(attribute.threshold), "when_failed": "", \
            "flags": {"value": 51, "string": "PO--CK ", "prefailure": true}, \
            "raw": {"value": \(attribute.raw), "string": "\(attribute.raw)"}}
            """
        }
        try write(
            "smart/\(name).json",
            """
            {
              "json_format_version": [1, 0],
              "smartctl": {"version": [7, 3], "exit_status": 0},
              "device": {"name": "/dev/\(name)", "type": "sat", "protocol": "ATA"},
              "ata_smart_attributes": {
                "revision": 16,
                "table": [
            \(rows.joined(separator: ",\n"))
                ]
              }
            }

            """)
    }

    /// `ipmi/sel`: `lines` as `ipmitool sel elist` prints them.
    public func sel(_ lines: [String]) throws {
        try write("ipmi/sel", lines.map { $0 + "\n" }.joined())
    }

    /// An `ipmitool sel elist` line logged at `date` (UTC).
    public static func selLine(
        _ id: Int, _ date: Date, sensor: String, event: String, asserted: Bool = true
    ) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func two(_ value: Int?) -> String { value.map { $0 < 10 ? "0\($0)" : "\($0)" } ?? "00" }
        let day = "\(two(parts.month))/\(two(parts.day))/\(parts.year ?? 1970)"
        let time = "\(two(parts.hour)):\(two(parts.minute)):\(two(parts.second))"
        let idText = String(repeating: " ", count: max(0, 4 - String(id, radix: 16).count)) + String(id, radix: 16)
        return "\(idText) | \(day) | \(time) | \(sensor) | \(event) | \(asserted ? "Asserted" : "Deasserted")"
    }

    /// `text` at `relative`, replacing what was there at once.
    public func write(_ relative: String, _ text: String) throws {
        let path = "\(directory)/\(relative)"
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
