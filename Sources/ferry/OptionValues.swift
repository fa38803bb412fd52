import ArgumentParser
import FerryGuest
import FerryTransport

/// Typed values of the commands' duration, number, size and rate options, checked when the command
/// line is parsed, before any image or guest is touched (issue 11, finding 5: `inf`, `1e30`, `nan`
/// or a negative value used to reach `Int(…)` or the JSON encoder long after the guest started).
///
/// Each option uses one of the `transform:` parsers below. A value that does not parse, is not
/// finite, is negative where that makes no sense, or is beyond the option's bound is a usage error
/// (exit 2); ArgumentParser names the option and the value, and `OptionValueError` says why and
/// what is accepted: "The value 'inf' is invalid for '--handoff-timeout <handoff-timeout>': not
/// a finite duration; give 0 to 30 days, like 500ms, 1.5s, 2m or 1h".
struct OptionValueError: Error, CustomStringConvertible {
    var description: String
}

/// A length of time: a number and an optional unit, `ms`, `s` (the default), `m` or `h`, like
/// `0`, `500ms`, `1.5s`, `2m`, `1h`. Finite, not negative, at most `maximumSeconds` (30 days
/// unless the option states less), so that every conversion to milliseconds or nanoseconds fits.
struct DurationOption: Equatable, Sendable, CustomStringConvertible {
    static let maximumSeconds: Double = 30 * 86_400

    let seconds: Double
    /// The text it was given as (for messages and `--help`).
    let text: String

    init(seconds: Double, text: String? = nil) {
        precondition(seconds.isFinite && seconds >= 0 && seconds <= Self.maximumSeconds, "a duration within 0…30 days")
        self.seconds = seconds
        self.text = text ?? DurationOption.format(seconds)
    }

    /// As a `Duration`, for the library's options.
    var duration: Duration { .milliseconds(milliseconds) }

    /// Whole milliseconds (rounded); always fits: at most 2.6e9.
    var milliseconds: Int { Int((seconds * 1000).rounded()) }

    var description: String { text }

    /// Parses `text`; the duration must lie within `0…maximum` seconds.
    static func parse(_ text: String, upTo maximum: Double = maximumSeconds) throws(OptionValueError) -> DurationOption
    {
        let range = "give 0 to \(format(maximum)), like 500ms, 1.5s, 2m or 1h"
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var number = Substring(text)
        var scale = 1.0
        if let (suffix, unitScale) = units.first(where: { text.hasSuffix($0.0) }) {
            number = number.dropLast(suffix.count)
            scale = unitScale
        }
        guard let value = Double(number) else {
            throw OptionValueError(description: "not a duration; \(range)")
        }
        guard value.isFinite else { throw OptionValueError(description: "not a finite duration; \(range)") }
        guard value >= 0 else { throw OptionValueError(description: "a duration cannot be negative; \(range)") }
        let seconds = value * scale
        guard seconds <= maximum else {
            throw OptionValueError(description: "longer than \(format(maximum)); \(range)")
        }
        return DurationOption(seconds: seconds, text: text)
    }

    /// A `transform:` for an option whose bound is tighter than 30 days.
    static func upTo(_ maximum: Double) -> @Sendable (String) throws -> DurationOption {
        { text in try parse(text, upTo: maximum) }
    }

    /// `30 days`, `1 h`, `90 s`: the largest unit that divides the value, for messages.
    static func format(_ seconds: Double) -> String {
        for (name, unit) in [("days", 86_400.0), ("h", 3600), ("m", 60)]
        where seconds >= unit && seconds.truncatingRemainder(dividingBy: unit) == 0 {
            return "\(Int(seconds / unit)) \(name)"
        }
        return seconds == seconds.rounded() && seconds < 1e15 ? "\(Int(seconds)) s" : "\(seconds) s"
    }
}

extension DurationOption: ExpressibleByArgument {
    init?(argument: String) {
        guard let value = try? DurationOption.parse(argument) else { return nil }
        self = value
    }

    var defaultValueDescription: String { text }
}

/// Parsers for plain numbers and counts (`transform:` of an `Int` or `Double` option).
enum NumberOption {
    /// A whole number within `range`.
    static func count(_ range: ClosedRange<Int>) -> @Sendable (String) throws -> Int {
        { text in
            guard let value = Int(text) else {
                throw OptionValueError(
                    description: "not a whole number; give \(range.lowerBound) to \(range.upperBound)")
            }
            guard range.contains(value) else {
                throw OptionValueError(description: "out of range; give \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        }
    }

    /// A finite number within `range`, in `unit` (for the message).
    static func real(_ range: ClosedRange<Double>, unit: String) -> @Sendable (String) throws -> Double {
        { text in
            let accepted = "give \(format(range.lowerBound)) to \(format(range.upperBound)) \(unit)"
            guard let value = Double(text) else { throw OptionValueError(description: "not a number; \(accepted)") }
            guard value.isFinite else { throw OptionValueError(description: "not a finite number; \(accepted)") }
            guard range.contains(value) else { throw OptionValueError(description: "out of range; \(accepted)") }
            return value
        }
    }

    /// `0.1`, `3600000`: no exponent, no needless fraction.
    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? "\(Int64(value))" : "\(value)"
    }
}

/// The built-in guest's `--workload`, checked with the other options (a `trace:` file is read later).
func validateWorkload(_ workload: String) throws(ValidationError) {
    do throws(GuestError) {
        _ = try WorkloadSpec.parse(workload)
    } catch {
        throw ValidationError("--workload \(workload): \(error.message)")
    }
}

/// A byte count like `4096`, `512M`, `1.5G` (`parseByteSize`), within the option's bounds.
struct SizeOption: Equatable, Sendable, CustomStringConvertible {
    let bytes: Int
    let text: String

    init(bytes: Int, text: String) {
        self.bytes = bytes
        self.text = text
    }

    var description: String { text }

    /// A `transform:` accepting `minimum…maximum` bytes (`what` names them in the message).
    static func within(_ minimum: Int, _ maximum: Int, _ what: String) -> @Sendable (String) throws -> SizeOption {
        { text in
            let bytes: Int
            do throws(GuestError) {
                bytes = try parseByteSize(text)
            } catch {
                throw OptionValueError(description: error.message)
            }
            guard bytes >= minimum && bytes <= maximum else {
                throw OptionValueError(description: "out of range; give \(what)")
            }
            return SizeOption(bytes: bytes, text: text)
        }
    }
}

/// A rate like `200MB/s` or `50000pages/s` (`Rate.parse`, which also bounds it).
enum RateOption {
    static func parse(_ text: String) throws -> Rate {
        do throws(GuestError) {
            return try Rate.parse(text)
        } catch {
            throw OptionValueError(description: error.message)
        }
    }

    /// Bytes per second only (a bandwidth), like `100MB/s`.
    static func bandwidth(_ text: String) throws -> Rate {
        let rate = try parse(text)
        guard case .bytes = rate.unit else {
            throw OptionValueError(description: "give bytes or bits per second, like 100MB/s, 1GB/s or 800Mbit/s")
        }
        return rate
    }
}

/// `--to`, `--listen` and `--connect` take `HOST:PORT`; a port alone (`7700` or `:7700`) means
/// this host's loopback address.
enum EndpointOption {
    static let defaultHost = "127.0.0.1"
}
