import FerryDecisions
import Foundation

/// A host's hardware signals as files under one directory (`ferry agent --health-dir`), laid out
/// as where the facts live on Linux, so that a test or an operator's collector can write them
/// (docs/agent.md, "Health directory"):
///
/// - `edac/mc/mcN/ce_count` and `ue_count`: decimal counts, as in `/sys/devices/system/edac/mc/`.
/// - `smart/NAME.json`: `smartctl --json -A /dev/NAME`'s output; `ata_smart_attributes.table[]`
///   with `id`, `name`, `value`, `worst`, `thresh` and `raw.value` is read.
/// - `ipmi/sel`: `ipmitool sel elist`'s lines,
///   `   1 | 12/04/2026 | 10:00:00 | Memory #0x01 | Uncorrectable ECC | Asserted` (dates read
///   as UTC).
///
/// What is absent says nothing (no directory: no signals of that kind). A file that cannot be
/// read or parsed is listed in `HealthReading.unreadable`, and its last good reading stands in
/// for it (a collector caught rewriting a file changes nothing); an event-log line that cannot
/// be parsed is listed and skipped.
struct HealthDirectory: Sendable {
    let path: String

    /// The last good reading of each counter or SMART file, by its path under the directory.
    struct LastGood: Sendable {
        var controllers: [String: MemoryControllerCounts] = [:]
        var disks: [String: SMARTDisk] = [:]
    }

    /// One look at every file.
    func read(_ lastGood: inout LastGood) -> HealthReading {
        var reading = HealthReading()
        for name in entries("edac/mc") where name.hasPrefix("mc") && Int(name.dropFirst(2)) != nil {
            let relative = "edac/mc/\(name)"
            do throws(Unreadable) {
                let counts = try Self.memoryController(name: name, directory: "\(path)/\(relative)")
                lastGood.controllers[relative] = counts
                reading.memoryControllers.append(counts)
            } catch {
                reading.unreadable.append("\(relative): \(error.reason)")
                if let last = lastGood.controllers[relative] { reading.memoryControllers.append(last) }
            }
        }
        for file in entries("smart") where file.hasSuffix(".json") {
            let relative = "smart/\(file)"
            do throws(Unreadable) {
                let disk = try Self.smart(
                    name: String(file.dropLast(5)), json: try Self.contents("\(path)/\(relative)"))
                lastGood.disks[relative] = disk
                reading.disks.append(disk)
            } catch {
                reading.unreadable.append("\(relative): \(error.reason)")
                if let last = lastGood.disks[relative] { reading.disks.append(last) }
            }
        }
        let sel = "\(path)/ipmi/sel"
        if FileManager.default.fileExists(atPath: sel) {
            do throws(Unreadable) {
                let (events, bad) = Self.selEntries(String(decoding: try Self.contents(sel), as: UTF8.self))
                reading.events = events
                reading.unreadable += bad.map { "ipmi/sel \($0)" }
            } catch {
                reading.unreadable.append("ipmi/sel: \(error.reason)")
            }
        }
        return reading
    }

    /// The names in a subdirectory, sorted; none when it is absent.
    private func entries(_ relative: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(path)/\(relative)")) ?? []).sorted()
    }

    /// Why a file could not be read or parsed.
    struct Unreadable: Error {
        var reason: String
    }

    static func contents(_ path: String) throws(Unreadable) -> Data {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Unreadable(reason: FileManager.default.fileExists(atPath: path) ? "cannot be read" : "missing")
        }
        return data
    }

    /// `ce_count` and `ue_count` of the memory controller in `directory`.
    static func memoryController(name: String, directory: String) throws(Unreadable) -> MemoryControllerCounts {
        func count(_ file: String) throws(Unreadable) -> Int64 {
            let data: Data
            do throws(Unreadable) { data = try contents("\(directory)/\(file)") } catch {
                throw Unreadable(reason: "\(file) \(error.reason)")
            }
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let value = Int64(text), value >= 0 else {
                throw Unreadable(reason: "\(file) is \"\(text.prefix(40))\", not a count")
            }
            return value
        }
        return MemoryControllerCounts(name: name, corrected: try count("ce_count"), uncorrected: try count("ue_count"))
    }

    /// The attributes of `smartctl --json -A`'s output (none for a disk without ATA attributes,
    /// such as an NVMe drive).
    static func smart(name: String, json: Data) throws(Unreadable) -> SMARTDisk {
        struct Output: Decodable {
            struct Attributes: Decodable { var table: [Row] }
            struct Row: Decodable {
                struct Raw: Decodable { var value: Int64 }
                var id: Int
                var name: String
                var value: Int
                var worst: Int
                var thresh: Int
                var raw: Raw
            }
            var attributes: Attributes?

            enum CodingKeys: String, CodingKey {
                case attributes = "ata_smart_attributes"
            }
        }
        let output: Output
        do { output = try JSONDecoder().decode(Output.self, from: json) } catch {
            throw Unreadable(reason: "not smartctl's JSON (\(Self.describe(error)))")
        }
        return SMARTDisk(
            name: name,
            attributes: (output.attributes?.table ?? []).map {
                SMARTAttribute(
                    id: $0.id, name: $0.name, value: $0.value, worst: $0.worst, threshold: $0.thresh, raw: $0.raw.value)
            })
    }

    /// What a decoding error says, briefly.
    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "no \(key.stringValue)"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
        default: "not JSON"
        }
    }

    /// The entries of `ipmitool sel elist`'s output, and the lines that are not one
    /// (`line 3: …`). Blank lines and "SEL has no entries" are none.
    static func selEntries(_ text: String) -> (entries: [SELEntry], unreadable: [String]) {
        var entries: [SELEntry] = []
        var unreadable: [String] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("SEL has no entries") { continue }
            switch selEntry(trimmed) {
            case .success(let entry): entries.append(entry)
            case .failure(let error): unreadable.append("line \(index + 1): \(error.reason)")
            }
        }
        return (entries, unreadable)
    }

    /// `1 | 12/04/2026 | 10:00:00 | Memory #0x01 | Uncorrectable ECC | Asserted` (more fields
    /// after the direction are ignored); `Pre-Init` for a date: no time.
    static func selEntry(_ line: String) -> Result<SELEntry, Unreadable> {
        let fields = line.split(separator: "|", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard fields.count >= 6 else { return .failure(Unreadable(reason: "\(fields.count) fields, not 6")) }
        let asserted: Bool
        switch fields[5] {
        case "Asserted": asserted = true
        case "Deasserted": asserted = false
        default: return .failure(Unreadable(reason: "\"\(fields[5].prefix(20))\" is neither Asserted nor Deasserted"))
        }
        var time: Int64?
        if fields[1] != "Pre-Init" {
            guard let seconds = unixSeconds(date: fields[1], time: fields[2]) else {
                return .failure(Unreadable(reason: "\"\(fields[1]) \(fields[2])\" is not MM/DD/YYYY HH:MM:SS"))
            }
            time = seconds
        }
        return .success(SELEntry(timeSeconds: time, sensor: fields[3], event: fields[4], asserted: asserted))
    }

    /// `12/04/2026` and `10:00:00` (UTC) as Unix seconds.
    static func unixSeconds(date: String, time: String) -> Int64? {
        let day = date.split(separator: "/").compactMap { Int64($0) }
        let clock = time.split(separator: ":").compactMap { Int64($0) }
        guard day.count == 3, clock.count == 3, (1...12).contains(day[0]), (1...31).contains(day[1]),
            (1970...9999).contains(day[2]), (0...23).contains(clock[0]), (0...59).contains(clock[1]),
            (0...60).contains(clock[2])
        else { return nil }
        return daysFromCivil(year: day[2], month: day[0], day: day[1]) * 86_400 + clock[0] * 3600 + clock[1] * 60
            + clock[2]
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
