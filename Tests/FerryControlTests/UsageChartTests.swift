import FerryControl
import Foundation
import FoundationXML
import Testing

@testable import FerryController

/// The console's usage chart: well-formed SVG, one polyline per run of points (a gap breaks the
/// line), values mapped onto the plot, and the title escaped.
@Suite struct UsageChartTests {
    static func document(_ svg: String) throws -> XMLElement {
        try #require(try XMLDocument(xmlString: svg).rootElement())
    }

    /// An attribute's value (FoundationXML's `attribute(forName:)` finds none under a default
    /// namespace, so the list is searched).
    static func attribute(_ element: XMLElement, _ name: String) -> String? {
        element.attributes?.first { $0.name == name }?.stringValue
    }

    static func polylines(_ root: XMLElement, _ kind: String) -> [[(Double, Double)]] {
        root.elements(forName: "polyline").filter { attribute($0, "class") == kind }.map {
            (attribute($0, "points") ?? "").split(separator: " ").map { pair in
                let xy = pair.split(separator: ",").map { Double($0)! }
                return (xy[0], xy[1])
            }
        }
    }

    @Test func pointsBecomeLinesAndAGapBreaksThem() throws {
        let points = [
            UsagePoint(timeMilliseconds: 0, cpuPercent: 0, loadPermille: 0),
            UsagePoint(timeMilliseconds: 1000, cpuPercent: 100, loadPermille: 500),
            UsagePoint(timeMilliseconds: 2000, cpuPercent: 50),
            UsagePoint(timeMilliseconds: 60_000, cpuPercent: 25, loadPermille: 250),
        ]
        let svg = UsageChart.svg(points, from: 0, to: 60_000, title: "web <1> & \"two\"")
        let root = try Self.document(svg)
        #expect(root.elements(forName: "title").first?.stringValue == "web <1> & \"two\"")
        let cpu = Self.polylines(root, "cpu")
        try #require(cpu.map(\.count) == [3, 2], "a run of three, then a lone point after the gap: \(cpu)")
        let left = UsageChart.margin.left
        let right = UsageChart.width - UsageChart.margin.right
        let top = UsageChart.margin.top
        let bottom = UsageChart.height - UsageChart.margin.bottom
        #expect(abs(cpu[0][0].0 - left) < 0.06 && abs(cpu[0][0].1 - bottom) < 0.06, "0% at the start")
        #expect(abs(cpu[0][1].1 - top) < 0.06, "100% at the top")
        #expect(abs(cpu[1][0].0 - right) < 0.06 && abs(cpu[1][0].1 - (top + 0.75 * (bottom - top))) < 0.06)
        let load = Self.polylines(root, "load")
        try #require(load.map(\.count) == [2, 2], "load where reported: \(load)")
        #expect(abs(load[0][1].1 - (top + 0.5 * (bottom - top))) < 0.06, "500 ‰ is 50%")
        let labels = root.elements(forName: "text").compactMap(\.stringValue)
        #expect(labels.contains("now") && labels.contains("100%"), "\(labels)")
    }

    @Test func anEmptySeriesSaysSo() throws {
        let root = try Self.document(UsageChart.svg([], from: 0, to: 600_000, title: "nothing"))
        #expect(root.elements(forName: "polyline").isEmpty)
        #expect(root.elements(forName: "text").contains { $0.stringValue == "no samples yet" })
        #expect(UsageChart.ticks(from: 0, to: 600_000).count <= 11)
    }
}
