/// Host loads before and after a balancing pass, as a text picture: one row per tenth of load, a
/// bar per side scaled to the fullest row.
struct LoadHistogram {
    static let rows = 11
    static let barWidth = 30

    let before: [Double]
    let after: [Double]

    /// The row of a load: tenths from 0.0–0.1 to 0.9–1.0, and a last one for 1.0 and above.
    static func row(_ load: Double) -> Int { min(rows - 1, max(0, Int((load * 10).rounded(.down)))) }

    static func counts(_ loads: [Double]) -> [Int] {
        var counts = [Int](repeating: 0, count: rows)
        for load in loads { counts[row(load)] += 1 }
        return counts
    }

    func text() -> String {
        let (left, right) = (Self.counts(before), Self.counts(after))
        let fullest = max(1, (left + right).max() ?? 1)
        func bar(_ count: Int) -> String {
            let length = count == 0 ? 0 : max(1, count * Self.barWidth / fullest)
            let text = String(repeating: "█", count: length) + (length > 0 ? " " : "") + "\(count)"
            return text + String(repeating: " ", count: max(0, Self.barWidth + 7 - text.count))
        }
        var lines = ["host load   before" + String(repeating: " ", count: Self.barWidth + 1) + "after"]
        for row in 0..<Self.rows {
            let label = row == Self.rows - 1 ? "≥ 1.0     " : "0.\(row)–\(row == 9 ? "1.0" : "0.\(row + 1)")   "
            let line = "  \(label)\(bar(left[row]))\(bar(right[row]))"
            lines.append(String(line.reversed().drop { $0 == " " }.reversed()))
        }
        return lines.joined(separator: "\n")
    }
}
