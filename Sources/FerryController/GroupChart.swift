import FerryControl
import Foundation

/// A group's timeline as an SVG chart, drawn on the server as `UsageChart` draws a guest's: the
/// group's mean metric (percent, left scale) a solid line, its desired count a dashed step line
/// and its running members a solid step line (members, right scale from 0 to the group's max).
/// Pure.
enum GroupChart {
    /// A count that holds from `timeMilliseconds` until the next step.
    struct Step: Equatable {
        var timeMilliseconds: Int64
        var count: Int
    }

    static func svg(
        metric: [MetricSample], desired: [Step], running: [Step], from: Int64, to: Int64, maxCount: Int,
        title: String
    ) -> String {
        precondition(to > from)
        let (width, height, margin) = (UsageChart.width, UsageChart.height, UsageChart.margin)
        let plotWidth = width - margin.left - 40 - margin.right
        let plotHeight = height - margin.top - margin.bottom
        let right = margin.left + plotWidth
        let top = Double(Swift.max(1, maxCount))
        func x(_ time: Int64) -> Double {
            margin.left + Double(Swift.min(Swift.max(time, from), to) - from) / Double(to - from) * plotWidth
        }
        func y(_ fraction: Double) -> Double { margin.top + (1 - Swift.min(1, Swift.max(0, fraction))) * plotHeight }
        let f = UsageChart.format
        var parts = [
            #"<svg xmlns="http://www.w3.org/2000/svg" class="group-chart" viewBox="0 0 \#(f(width)) \#(f(height))" role="img" aria-label="\#(UsageChart.escape(title))">"#,
            "<title>\(UsageChart.escape(title))</title>",
        ]
        for fraction in [0.0, 0.5, 1] {
            parts.append(
                #"<line class="grid" x1="\#(f(margin.left))" x2="\#(f(right))" y1="\#(f(y(fraction)))" y2="\#(f(y(fraction)))" stroke="lightgray"/>"#
            )
            parts.append(
                #"<text x="\#(f(margin.left - 4))" y="\#(f(y(fraction) + 4))" text-anchor="end" font-size="11">\#(Int(fraction * 100))%</text>"#
            )
            let count = (fraction * top * 10).rounded() / 10
            let label = count == count.rounded() ? String(Int(count)) : String(count)
            parts.append(
                #"<text x="\#(f(right + 4))" y="\#(f(y(fraction) + 4))" font-size="11" fill="seagreen">\#(label)</text>"#
            )
        }
        for tick in UsageChart.ticks(from: from, to: to) {
            let label = tick == to ? "now" : "−\(UsageChart.minutesLabel(to - tick))"
            parts.append(
                #"<text x="\#(f(x(tick)))" y="\#(f(height - 6))" text-anchor="middle" font-size="11">\#(label)</text>"#
            )
        }
        let points = metric.map { UsagePoint(timeMilliseconds: $0.timeMilliseconds, cpuPercent: $0.value) }
            .filter { $0.timeMilliseconds >= from && $0.timeMilliseconds <= to }
        for run in UsageChart.runs(points, gap: 5000) {
            let line = run.map { "\(f(x($0.timeMilliseconds))),\(f(y($0.cpuPercent / 100)))" }.joined(separator: " ")
            parts.append(
                #"<polyline class="metric" fill="none" stroke="steelblue" stroke-width="2" points="\#(line)"/>"#)
        }
        let stepLine = { (steps: [Step]) -> String in
            stepPoints(steps, from: from, to: to).map { "\(f(x($0.0))),\(f(y(Double($0.1) / top)))" }
                .joined(separator: " ")
        }
        parts.append(
            #"<polyline class="running" fill="none" stroke="seagreen" stroke-width="2" points="\#(stepLine(running))"/>"#
        )
        parts.append(
            #"<polyline class="desired" fill="none" stroke="darkorange" stroke-width="1.5" stroke-dasharray="5 3" points="\#(stepLine(desired))"/>"#
        )
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }

    /// The corners of a step line over [from, to]: the count in force at `from` (0 before the
    /// first step), each step's horizontal then vertical segment, on to `to`.
    static func stepPoints(_ steps: [Step], from: Int64, to: Int64) -> [(Int64, Int)] {
        let sorted = steps.sorted { $0.timeMilliseconds < $1.timeMilliseconds }
        var current = sorted.last { $0.timeMilliseconds <= from }?.count ?? 0
        var points: [(Int64, Int)] = [(from, current)]
        for step in sorted where step.timeMilliseconds > from && step.timeMilliseconds <= to {
            points.append((step.timeMilliseconds, current))
            points.append((step.timeMilliseconds, step.count))
            current = step.count
        }
        points.append((to, current))
        return points
    }

    /// The desired count after each action.
    static func desired(_ actions: [ScalingAction]) -> [Step] {
        actions.map { Step(timeMilliseconds: Billing.milliseconds($0.time), count: $0.to) }
    }

    /// How many members ran, after each change, from their journals: +1 when one became running,
    /// −1 when one left running.
    static func running(_ journals: [[CloudJournalEntry]]) -> [Step] {
        var changes: [(Int64, Int)] = []
        for entry in journals.joined() {
            if entry.to == .running { changes.append((Billing.milliseconds(entry.time), 1)) }
            if entry.from == .running { changes.append((Billing.milliseconds(entry.time), -1)) }
        }
        var count = 0
        var steps: [Step] = []
        for (time, change) in changes.sorted(by: { $0.0 < $1.0 }) {
            count += change
            if let last = steps.last, last.timeMilliseconds == time {
                steps[steps.count - 1].count = count
            } else {
                steps.append(Step(timeMilliseconds: time, count: count))
            }
        }
        return steps
    }
}
