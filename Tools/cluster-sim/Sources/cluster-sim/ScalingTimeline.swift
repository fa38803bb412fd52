import Glibc

/// The first minutes of a scaling run as an SVG picture: the demand (in guests) and each policy's
/// count, second by second, for the closing note.
struct ScalingTimeline {
    var wave: Wave
    var seconds: Int
    var rows: [ScalingBenchmark.Row]

    struct WriteError: Error, CustomStringConvertible {
        let description: String
    }

    static let width = 1100.0
    static let height = 400.0
    static let margin = (left: 50.0, right: 290.0, top: 20.0, bottom: 40.0)

    func svg() -> String {
        let top = Double(
            max(rows.flatMap { $0.outcomes[0].replicas.prefix(seconds) }.max() ?? 1, Int(wave.high.rounded(.up))) + 1)
        let plotWidth = Self.width - Self.margin.left - Self.margin.right
        let plotHeight = Self.height - Self.margin.top - Self.margin.bottom
        func x(_ second: Double) -> String {
            Figures.format(Self.margin.left + second / Double(seconds) * plotWidth, 1)
        }
        func y(_ guests: Double) -> String { Figures.format(Self.margin.top + (1 - guests / top) * plotHeight, 1) }
        var parts = [
            "<svg xmlns='http://www.w3.org/2000/svg' width='\(Int(Self.width))' height='\(Int(Self.height))'"
                + " font-family='sans-serif' font-size='12'>",
            "<rect width='100%' height='100%' fill='white'/>",
        ]
        for guests in stride(from: 0, through: Int(top), by: 2) {
            parts.append(
                "<line x1='\(x(0))' y1='\(y(Double(guests)))' x2='\(x(Double(seconds)))' y2='\(y(Double(guests)))'"
                    + " stroke='gainsboro'/><text x='\(Self.margin.left - 8)' y='\(y(Double(guests)))'"
                    + " text-anchor='end' dominant-baseline='middle'>\(guests)</text>")
        }
        for minute in stride(from: 0, through: seconds, by: 60) {
            parts.append(
                "<text x='\(x(Double(minute)))' y='\(Self.height - 20)' text-anchor='middle'>\(minute / 60) min</text>")
        }
        let demand = (0..<seconds).map { wave.demand(atSecond: $0) }
        parts.append(polyline(steps(demand, x: x, y: y), colour: "black", width: 1, dashed: true))
        for (index, row) in rows.enumerated() {
            // Each policy a hair above the one before, so that equal counts stay visible.
            let counts = row.outcomes[0].replicas.prefix(seconds).map { Double($0) + 0.08 * Double(index) }
            parts.append(polyline(steps(counts, x: x, y: y), colour: row.colour, width: 2, dashed: false))
        }
        let legend = [("demand (guests' worth of work)", "black")] + rows.map { ($0.name, $0.colour) }
        for (index, (name, colour)) in legend.enumerated() {
            let top = Self.margin.top + 10 + Double(index) * 20
            let left = Self.width - Self.margin.right + 15
            parts.append(
                "<line x1='\(left)' y1='\(top)' x2='\(left + 20)' y2='\(top)' stroke='\(colour)' stroke-width='2'/>"
                    + "<text x='\(left + 26)' y='\(top)' dominant-baseline='middle'>\(Self.escaped(name))</text>")
        }
        parts.append("</svg>\n")
        return parts.joined(separator: "\n")
    }

    /// `text` with the characters XML reserves escaped.
    static func escaped(_ text: String) -> String {
        var result = ""
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "'": result += "&apos;"
            default: result.append(character)
            }
        }
        return result
    }

    /// A value a second as a staircase: a point where it starts, two where it changes, one at the end.
    func steps(_ values: [Double], x: (Double) -> String, y: (Double) -> String) -> [String] {
        guard let first = values.first else { return [] }
        var points = ["\(x(0)),\(y(first))"]
        for (second, value) in values.enumerated().dropFirst() where value != values[second - 1] {
            points += ["\(x(Double(second))),\(y(values[second - 1]))", "\(x(Double(second))),\(y(value))"]
        }
        return points + ["\(x(Double(values.count))),\(y(values[values.count - 1]))"]
    }

    func polyline(_ points: [String], colour: String, width: Int, dashed: Bool) -> String {
        "<polyline fill='none' stroke='\(colour)' stroke-width='\(width)'"
            + (dashed ? " stroke-dasharray='4 3'" : "") + " points='\(points.joined(separator: " "))'/>"
    }

    func write(to path: String) throws {
        guard let file = fopen(path, "w") else { throw WriteError(description: "cannot open \(path) for writing") }
        defer { fclose(file) }
        guard fputs(svg(), file) >= 0 else { throw WriteError(description: "cannot write \(path)") }
    }
}
