import FerryControl
import Foundation

/// A guest's or a group's CPU use and load over time as an SVG line chart, drawn on the server
/// (the console has no JavaScript): CPU use a solid line, the guest-reported load a dashed one,
/// both on a 0–100% scale (load per mille ÷ 10), time on the x axis from `from` to `to`, labelled
/// in minutes before `to`. A gap of more than `gapMilliseconds` between two points breaks the
/// line rather than drawing a straight segment across a time nothing was reported. Pure.
enum UsageChart {
    static let width = 640.0
    static let height = 200.0
    static let margin = (left: 40.0, right: 10.0, top: 10.0, bottom: 24.0)

    static func svg(
        _ points: [UsagePoint], from: Int64, to: Int64, title: String, gapMilliseconds: Int64 = 5000
    ) -> String {
        precondition(to > from)
        let plotWidth = width - margin.left - margin.right
        let plotHeight = height - margin.top - margin.bottom
        func x(_ time: Int64) -> Double { margin.left + Double(time - from) / Double(to - from) * plotWidth }
        func y(_ percent: Double) -> Double { margin.top + (1 - min(100, max(0, percent)) / 100) * plotHeight }
        let shown = points.filter { $0.timeMilliseconds >= from && $0.timeMilliseconds <= to }
        let cpu = runs(shown, gap: gapMilliseconds).map { run in
            run.map { "\(format(x($0.timeMilliseconds))),\(format(y($0.cpuPercent)))" }.joined(separator: " ")
        }
        let load = runs(shown.filter { $0.loadPermille != nil }, gap: gapMilliseconds).map { run in
            run.map { "\(format(x($0.timeMilliseconds))),\(format(y(Double($0.loadPermille!) / 10)))" }
                .joined(separator: " ")
        }
        var parts = [
            #"<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart" viewBox="0 0 \#(format(width)) \#(format(height))" role="img" aria-label="\#(escape(title))">"#,
            "<title>\(escape(title))</title>",
        ]
        for percent in [0.0, 50, 100] {
            parts.append(
                #"<line class="grid" x1="\#(format(margin.left))" x2="\#(format(width - margin.right))" y1="\#(format(y(percent)))" y2="\#(format(y(percent)))" stroke="lightgray"/>"#
            )
            parts.append(
                #"<text x="\#(format(margin.left - 4))" y="\#(format(y(percent) + 4))" text-anchor="end" font-size="11">\#(Int(percent))%</text>"#
            )
        }
        for tick in ticks(from: from, to: to) {
            let label = tick == to ? "now" : "−\(minutesLabel(to - tick))"
            parts.append(
                #"<text x="\#(format(x(tick)))" y="\#(format(height - 6))" text-anchor="middle" font-size="11">\#(label)</text>"#
            )
        }
        parts += cpu.map { #"<polyline class="cpu" fill="none" stroke="steelblue" stroke-width="2" points="\#($0)"/>"# }
        parts += load.map {
            #"<polyline class="load" fill="none" stroke="firebrick" stroke-width="1.5" stroke-dasharray="4 3" points="\#($0)"/>"#
        }
        if shown.isEmpty {
            parts.append(
                #"<text x="\#(format(width / 2))" y="\#(format(height / 2))" text-anchor="middle" font-size="13">no samples yet</text>"#
            )
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }

    /// The points split where two neighbours are more than `gap` apart; runs of one point are
    /// drawn as a point-long line (SVG draws nothing for one vertex), so they are doubled.
    static func runs(_ points: [UsagePoint], gap: Int64) -> [[UsagePoint]] {
        var runs: [[UsagePoint]] = []
        for point in points.sorted(by: { $0.timeMilliseconds < $1.timeMilliseconds }) {
            if let last = runs.last?.last, point.timeMilliseconds - last.timeMilliseconds <= gap {
                runs[runs.count - 1].append(point)
            } else {
                runs.append([point])
            }
        }
        return runs.map { $0.count == 1 ? [$0[0], $0[0]] : $0 }
    }

    /// Five to ten ticks at round minutes (or seconds, for short spans) before `to`, and `to`.
    static func ticks(from: Int64, to: Int64) -> [Int64] {
        let span = to - from
        let steps: [Int64] = [10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000]
        let step = steps.first { span / $0 <= 8 } ?? span / 6
        return stride(from: to, through: from, by: -Int(max(1, step))).reversed()
    }

    static func minutesLabel(_ milliseconds: Int64) -> String {
        milliseconds % 60_000 == 0 ? "\(milliseconds / 60_000) min" : "\(milliseconds / 1000) s"
    }

    static func format(_ value: Double) -> String { String(format: "%.1f", value) }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
