import FerryControl
import Foundation
import Hummingbird

/// `GET /v1/projects/{p}/invoice?from=&to=`: the period asked for. `from` and `to` are RFC 3339
/// times (`2026-12-01T00:00:00Z`, fractions of a second allowed) or dates (`2026-12-01`, midnight
/// UTC); `from` defaults to the start of the current month (UTC), `to` to now.
struct InvoiceQuery: Equatable {
    var from: Date
    var to: Date

    init(_ parameters: Hummingbird.Parameters, now: Date) throws {
        from = try Self.time(parameters, "from") ?? Self.startOfMonth(now)
        to = try Self.time(parameters, "to") ?? now
        guard from < to else {
            throw CloudAPIError(
                .unprocessableContent, "invalid_field",
                "from: \(CloudViews.time(from)) is not before to (\(CloudViews.time(to)))", field: "from")
        }
    }

    static func time(_ parameters: Hummingbird.Parameters, _ name: String) throws -> Date? {
        guard let text = parameters.get(name) else { return nil }
        return try CloudViews.parseTime(String(text), field: name, dates: true)
    }

    /// Midnight UTC on the first day of `now`'s month.
    static func startOfMonth(_ now: Date) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.date(from: calendar.dateComponents([.year, .month], from: now)) ?? now
    }
}

/// An invoice as the API shows it: amounts in micros (integers) and as decimal strings of the
/// currency unit (`"0.020088"`).
struct InvoiceView: Codable, Sendable, Equatable {
    struct Line: Codable, Sendable, Equatable {
        var guestID: String
        var name: String
        var flavor: String
        var pricePerSecondMicros: Int64
        var billedMilliseconds: Int64
        var billedSeconds: String
        var amountMicros: Int64
        var amount: String

        enum CodingKeys: String, CodingKey {
            case name, flavor, amount
            case guestID = "guest_id"
            case pricePerSecondMicros = "price_per_second_micros"
            case billedMilliseconds = "billed_milliseconds"
            case billedSeconds = "billed_seconds"
            case amountMicros = "amount_micros"
        }
    }

    var project: String
    var from: String
    var to: String
    var madeAt: String
    var lines: [Line]
    var billedMilliseconds: Int64
    var totalMicros: Int64
    var total: String

    init(_ invoice: Invoice) {
        project = invoice.project
        from = CloudViews.time(Self.date(invoice.period.fromMilliseconds))
        to = CloudViews.time(Self.date(invoice.period.toMilliseconds))
        madeAt = CloudViews.time(Self.date(invoice.madeAtMilliseconds))
        lines = invoice.lines.map { line in
            Line(
                guestID: line.guestID.hex, name: line.name.value, flavor: line.flavor,
                pricePerSecondMicros: line.pricePerSecondMicros, billedMilliseconds: line.billedMilliseconds,
                billedSeconds: Self.decimal(line.billedMilliseconds, places: 3), amountMicros: line.amountMicros,
                amount: Self.decimal(line.amountMicros, places: 6))
        }
        billedMilliseconds = invoice.billedMilliseconds
        totalMicros = invoice.totalMicros
        total = Self.decimal(invoice.totalMicros, places: 6)
    }

    enum CodingKeys: String, CodingKey {
        case project, from, to, lines, total
        case madeAt = "made_at"
        case billedMilliseconds = "billed_milliseconds"
        case totalMicros = "total_micros"
    }

    /// `value / 10^places` written exactly: `decimal(20088, places: 6)` is `"0.020088"`.
    static func decimal(_ value: Int64, places: Int) -> String {
        let scale = (0..<places).reduce(Int64(1)) { product, _ in product * 10 }
        let sign = value < 0 ? "-" : ""
        let magnitude = value.magnitude
        let fraction = String(magnitude % UInt64(scale))
        return sign + String(magnitude / UInt64(scale)) + "." + String(repeating: "0", count: places - fraction.count)
            + fraction
    }

    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
