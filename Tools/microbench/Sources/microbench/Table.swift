/// A plain-text table: a header row, a rule, then rows; the columns in `leftAligned` are
/// left-aligned, the rest (numbers) right-aligned.
struct Table {
    let headers: [String]
    let leftAligned: Set<Int>
    private(set) var rows: [[String]] = []

    init(_ headers: [String], leftAligned: Set<Int>) {
        self.headers = headers
        self.leftAligned = leftAligned
    }

    mutating func add(_ row: [String]) {
        precondition(row.count == headers.count, "row has \(row.count) cells, table has \(headers.count) columns")
        rows.append(row)
    }

    /// The table as lines of text.
    func render() -> String {
        var widths = headers.map(\.count)
        for row in rows {
            for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return leftAligned.contains(column) ? cell + padding : padding + cell
            }.joined(separator: "  ")
        }
        func trimmed(_ text: String) -> String { String(text.reversed().drop { $0 == " " }.reversed()) }
        var text = trimmed(line(headers)) + "\n"
        text += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n"
        for row in rows { text += trimmed(line(row)) + "\n" }
        return text
    }
}

/// `value` with exactly `digits` decimals (no Foundation).
func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int64((abs(value) * scale).rounded())
    let whole = scaled / Int64(scale)
    let fraction = scaled % Int64(scale)
    var text = (value < 0 && scaled != 0 ? "-" : "") + String(whole)
    if digits > 0 {
        let digitsText = String(fraction)
        text += "." + String(repeating: "0", count: digits - digitsText.count) + digitsText
    }
    return text
}

/// Three significant digits or so: 0.123, 1.23, 12.3, 123.
func short(_ value: Double) -> String {
    guard value.isFinite else { return "-" }
    let magnitude = abs(value)
    if magnitude >= 100 { return fixed(value, 0) }
    if magnitude >= 10 { return fixed(value, 1) }
    if magnitude >= 1 { return fixed(value, 2) }
    return fixed(value, 3)
}

/// "median (min–max)" of a rate derived from each sample's seconds; the fastest sample gives
/// the highest rate.
func rateRange(_ samples: Samples, _ rate: (Double) -> Double) -> String {
    "\(short(rate(samples.median))) (\(short(rate(samples.slowest)))–\(short(rate(samples.fastest))))"
}

/// "median (min–max)" of a per-sample value (e.g. a time) in the given scale.
func valueRange(_ samples: Samples, _ value: (Double) -> Double) -> String {
    "\(short(value(samples.median))) (\(short(value(samples.fastest)))–\(short(value(samples.slowest))))"
}
