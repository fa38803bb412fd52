import FerryControl
import Foundation
import Hummingbird

/// `GET /v1/guests/{id}/usage?minutes=N`: the guest's CPU use and load over the last N minutes
/// (1 to 15, default 10; samples older than 15 minutes are not kept).
enum UsageQuery {
    static func minutes(_ parameters: Hummingbird.Parameters) throws -> Int {
        guard let text = parameters.get("minutes") else { return 10 }
        guard let minutes = Int(text), (1...15).contains(minutes) else {
            throw CloudAPIError(
                .unprocessableContent, "invalid_field", "minutes: \"\(text)\" is not a whole number from 1 to 15",
                field: "minutes")
        }
        return minutes
    }
}

/// The answer: the span asked for and one point per interval between two samples.
struct UsageView: Encodable {
    struct Point: Encodable {
        var time: String
        var cpuPercent: Double
        var loadPermille: Int?

        enum CodingKeys: String, CodingKey {
            case time
            case cpuPercent = "cpu_percent"
            case loadPermille = "load_permille"
        }
    }

    var from: String
    var to: String
    var points: [Point]
    /// The samples the controller holds in the span (a guest whose first heartbeat just arrived
    /// has one, and no point yet) and when the latest was taken.
    var samples: Int
    var latestSampleAt: String?

    enum CodingKeys: String, CodingKey {
        case from, to, points, samples
        case latestSampleAt = "latest_sample_at"
    }

    init(from: Int64, to: Int64, points: [UsagePoint], samples: [GuestSample] = []) {
        self.samples = samples.count
        latestSampleAt = samples.map(\.timeMilliseconds).max().map { CloudViews.time(Self.date($0)) }
        self.from = CloudViews.time(Self.date(from))
        self.to = CloudViews.time(Self.date(to))
        self.points = points.map { point in
            Point(
                time: CloudViews.time(Self.date(point.timeMilliseconds)),
                cpuPercent: (point.cpuPercent * 10).rounded() / 10, loadPermille: point.loadPermille)
        }
    }

    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
