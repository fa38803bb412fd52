import Foundation

/// The times the controller API is given, read strictly by RFC 3339's grammar (section 5.6):
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of a second, then `Z` or an offset `±HH:MM`
/// (`T`/`Z` in either case, or a space between date and time, as the RFC allows). Every field
/// is range-checked (no 25th hour, no February 30th; a leap second's `:60` is refused: the
/// clocks it is compared with have none). With `dates`, a date alone (`2026-12-01`) is midnight
/// UTC. Nothing else (no time without an offset, no Unix seconds).
enum RFC3339 {
    static func parse(_ text: String, dates: Bool) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 10, let year = number(bytes, 0, 4), bytes[4] == UInt8(ascii: "-"),
            let month = number(bytes, 5, 2), bytes[7] == UInt8(ascii: "-"), let day = number(bytes, 8, 2)
        else { return nil }
        if bytes.count == 10 {
            return dates ? date(year, month, day, hour: 0, minute: 0, second: 0) : nil
        }
        guard bytes.count >= 20, [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(bytes[10]),
            let hour = number(bytes, 11, 2), bytes[13] == UInt8(ascii: ":"), let minute = number(bytes, 14, 2),
            bytes[16] == UInt8(ascii: ":"), let second = number(bytes, 17, 2)
        else { return nil }
        var index = 19
        var fraction = 0.0
        if bytes[index] == UInt8(ascii: ".") {
            index += 1
            let first = index
            while index < bytes.count, number(bytes, index, 1) != nil { index += 1 }
            guard index > first, let value = Double("0." + String(decoding: bytes[first..<index], as: UTF8.self))
            else { return nil }
            fraction = value
        }
        guard let offset = offsetSeconds(bytes[index...]),
            let whole = date(year, month, day, hour: hour, minute: minute, second: second)
        else { return nil }
        return whole.addingTimeInterval(fraction - Double(offset))
    }

    /// `Z`, `z` or `±HH:MM` and nothing after it: the offset from UTC in seconds.
    private static func offsetSeconds(_ rest: ArraySlice<UInt8>) -> Int? {
        let bytes = Array(rest)
        if bytes == [UInt8(ascii: "Z")] || bytes == [UInt8(ascii: "z")] { return 0 }
        guard bytes.count == 6, bytes[0] == UInt8(ascii: "+") || bytes[0] == UInt8(ascii: "-"),
            let hours = number(bytes, 1, 2), bytes[3] == UInt8(ascii: ":"), let minutes = number(bytes, 4, 2),
            hours <= 23, minutes <= 59
        else { return nil }
        return (bytes[0] == UInt8(ascii: "-") ? -1 : 1) * (hours * 3600 + minutes * 60)
    }

    /// The decimal number in `count` digits at `from`, or nil if any is not a digit.
    private static func number(_ bytes: [UInt8], _ from: Int, _ count: Int) -> Int? {
        guard from >= 0, from + count <= bytes.count else { return nil }
        var value = 0
        for byte in bytes[from..<from + count] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// The UTC instant of the fields, if they name one (the day exists in its month).
    private static func date(_ year: Int, _ month: Int, _ day: Int, hour: Int, minute: Int, second: Int) -> Date? {
        guard (1...12).contains(month), (1...31).contains(day), hour <= 23, minute <= 59, second <= 59 else {
            return nil
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let fields = DateComponents(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
        guard let date = calendar.date(from: fields),
            calendar.dateComponents([.year, .month, .day], from: date)
                == DateComponents(year: year, month: month, day: day)
        else { return nil }
        return date
    }
}
