import FerryTestSupport
import Foundation
import Testing

/// `GET /v1/projects/{p}/invoice` on a real `ferry control`: a guest that ran, stopped, started
/// and stopped again is billed its journal's running time, and the controller killed with -9 and
/// started again gives the same invoice (billing is a function of the journal's rows).
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneBillingTests {
    @Test func anInvoiceBillsTheJournalsRunningTimeAcrossARestart() throws {
        let cloud = try ControlPlaneFixture("cpbill", agents: 1)
        let body: [String: Any] = ["name": "web", "flavor": "tiny", "image": "builtin"]
        let id = try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String)
        #expect(try cloud.waitForGuest(id) { ["running", "error"].contains($0) }["state"] as? String == "running")
        usleep(300_000)
        #expect(try cloud.json("POST", "/v1/guests/\(id)/stop").1["state"] as? String == "stopped")
        #expect(try cloud.json("POST", "/v1/guests/\(id)/start").0 == 202)
        #expect(try cloud.waitForGuest(id) { $0 != "building" }["state"] as? String == "running")
        usleep(200_000)
        #expect(try cloud.json("POST", "/v1/guests/\(id)/stop").1["state"] as? String == "stopped")

        let journal = try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
        let running = try Self.runningMilliseconds(journal)
        #expect(running >= 500, "ran at least 300 + 200 ms")
        let target = "/v1/projects/alpha/invoice?from=2000-01-01T00:00:00Z&to=2100-01-01"
        let (status, invoice) = try cloud.json("GET", target)
        #expect(status == 200, "\(invoice)")
        let lines = invoice["lines"] as? [[String: Any]] ?? []
        #expect(lines.count == 1 && lines.first?["guest_id"] as? String == id, "\(invoice)")
        let billed = try #require(Self.integer(lines.first?["billed_milliseconds"]), "\(invoice)")
        #expect(billed == running, "billed \(billed) ms, ran \(running) ms by the journal: \(invoice)")
        #expect(Self.integer(lines.first?["amount_micros"]) == 10 * billed / 1000, "10 µ per second: \(invoice)")
        #expect(Self.integer(invoice["total_micros"]) == 10 * billed / 1000)
        #expect(invoice["from"] as? String == "2000-01-01T00:00:00.000Z")

        cloud.killController()
        try cloud.startController()
        let (_, again) = try cloud.json("GET", target)
        let againLines = again["lines"] as? [[String: Any]] ?? []
        #expect(againLines.map { Self.integer($0["billed_milliseconds"]) } == [billed], "\(again)")
        #expect(again["total"] as? String == invoice["total"] as? String)

        let (badStatus, bad) = try cloud.json("GET", "/v1/projects/alpha/invoice?from=yesterday")
        #expect(badStatus == 422 && (bad["error"] as? [String: Any])?["field"] as? String == "from", "\(bad)")
        let (missingStatus, missing) = try cloud.json("GET", "/v1/projects/nobody/invoice")
        #expect(missingStatus == 404 && (missing["error"] as? [String: Any])?["code"] as? String == "not_found")
        let month = try cloud.json("GET", "/v1/projects/alpha/invoice").1
        #expect((month["from"] as? String)?.hasSuffix("-01T00:00:00.000Z") == true, "this month: \(month)")
    }

    static func integer(_ value: Any?) -> Int64? { (value as? NSNumber)?.int64Value }

    /// The sum of the journal's `running` spans, in milliseconds.
    static func runningMilliseconds(_ entries: [[String: Any]]) throws -> Int64 {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var total: Int64 = 0
        var since: Date?
        for entry in entries {
            let time = try style.parse(try #require(entry["time"] as? String))
            if let start = since, entry["to"] as? String != "running" {
                total += Int64((time.timeIntervalSince(start) * 1000).rounded())
                since = nil
            } else if since == nil, entry["to"] as? String == "running" {
                since = time
            }
        }
        return total
    }
}
