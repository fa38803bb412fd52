import FerryControl
import FerryHostModel
import Foundation
import FoundationXML
import Testing

@testable import FerryController

/// The console's group timeline: well-formed SVG with the metric, the desired count and the
/// running members, the step lines built from the actions and the members' journals.
@Suite struct GroupChartTests {
    @Test func theChartHasItsThreeLinesAndIsWellFormed() throws {
        let metric = (1...5).map { MetricSample(timeMilliseconds: Int64($0) * 1000, value: Double($0) * 20) }
        let svg = GroupChart.svg(
            metric: metric, desired: [.init(timeMilliseconds: 0, count: 1), .init(timeMilliseconds: 3000, count: 3)],
            running: [.init(timeMilliseconds: 500, count: 1)], from: 0, to: 6000, maxCount: 4, title: "group <web>")
        let root = try #require(try XMLDocument(xmlString: svg).rootElement())
        let lines = (root.children ?? []).compactMap { $0 as? XMLElement }.filter { $0.name == "polyline" }
        let classes = lines.compactMap { line in line.attributes?.first { $0.name == "class" }?.stringValue }
        #expect(classes == ["metric", "running", "desired"], "\(svg)")
        #expect(svg.contains("group &lt;web&gt;") && !svg.contains("\"#"))
    }

    @Test func stepsComeFromTheActionsAndTheJournals() throws {
        let points = GroupChart.stepPoints(
            [.init(timeMilliseconds: 1000, count: 2), .init(timeMilliseconds: 3000, count: 1)], from: 2000, to: 5000)
        #expect(points.map(\.0) == [2000, 3000, 3000, 5000] && points.map(\.1) == [2, 2, 1, 1])
        let id = GuestID.random()
        func entry(_ second: Double, _ from: CloudGuestState?, _ to: CloudGuestState) -> CloudJournalEntry {
            CloudJournalEntry(
                sequence: 0, guestID: id, time: Date(timeIntervalSince1970: second), from: from, to: to, cause: "")
        }
        let first = [entry(1, nil, .pending), entry(2, .building, .running), entry(8, .running, .stopping)]
        let second = [entry(3, .building, .running)]
        let steps = GroupChart.running([first, second])
        #expect(
            steps == [
                .init(timeMilliseconds: 2000, count: 1), .init(timeMilliseconds: 3000, count: 2),
                .init(timeMilliseconds: 8000, count: 1),
            ])
        let actions = [
            ScalingAction(
                sequence: 1, groupID: "g", time: Date(timeIntervalSince1970: 1), from: 0, to: 1, reason: "created")
        ]
        #expect(GroupChart.desired(actions) == [.init(timeMilliseconds: 1000, count: 1)])
    }
}
