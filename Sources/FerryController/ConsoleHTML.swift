import FerryControl
import Foundation
import HTTPTypes
import Hummingbird

/// What the console's templates show (ConsoleTemplates): plain values, formatted here, so that
/// the templates only place them. Mustache reads these structs' stored properties by name.
enum ConsoleHTML {
    /// The page `template` with `page`, inside the layout, as an HTML response.
    static func render(
        _ template: String, _ page: Any, title: String, session: ConsoleSession?, status: HTTPResponse.Status = .ok,
        refreshSeconds: Int? = nil
    ) -> Response {
        let content = ConsoleTemplates.library.render(page, withTemplate: template) ?? ""
        let layout = Layout(
            title: title, refreshSeconds: refreshSeconds, user: session.map { ConsoleUser(session: $0) },
            csrfToken: session?.csrfToken ?? "", content: content)
        let html = ConsoleTemplates.library.render(layout, withTemplate: "layout") ?? ""
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// 303 See Other: where a form's POST sends the browser (redirect-after-post).
    static func redirect(_ location: String) -> Response {
        var headers = HTTPFields()
        headers[.location] = location
        headers[.contentLength] = "0"
        return Response(status: .seeOther, headers: headers)
    }

    /// An error as a page with its status (404 for another project's guest, 403 for a site page).
    static func error(_ error: CloudAPIError, session: ConsoleSession?) -> Response {
        let heading =
            switch error.status {
            case .notFound: "Not found"
            case .forbidden: "Not allowed"
            case .conflict: "Not possible now"
            default: "Something went wrong"
            }
        var response = render(
            "error", ErrorView(heading: heading, message: error.message), title: heading, session: session,
            status: error.status)
        if let seconds = error.retryAfterSeconds { response.headers[.retryAfter] = String(seconds) }
        return response
    }

    struct Layout {
        var title: String
        var refreshSeconds: Int?
        var user: ConsoleUser?
        var csrfToken: String
        var content: String
    }

    struct ErrorView {
        var heading: String
        var message: String
    }
}

/// Who the page is for: the session's user and the CSRF token its forms carry.
struct ConsoleSession: Sendable {
    var principal: Principal
    var csrfToken: String

    init(_ context: ControllerContext) throws {
        principal = try context.principal()
        if case .session(let session, _) = context.caller { csrfToken = session.csrfToken } else { csrfToken = "" }
    }
}

struct ConsoleUser {
    var name: String
    var siteAdmin: Bool

    init(session: ConsoleSession) {
        name = session.principal.user
        siteAdmin = session.principal.siteAdmin
    }
}

/// Numbers as people read them.
enum ConsoleFormat {
    /// `16 MiB`, `1 GiB`, `1.5 GiB`.
    static func bytes(_ value: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var amount = Double(value)
        var unit = 0
        while amount >= 1024, unit < units.count - 1 {
            amount /= 1024
            unit += 1
        }
        let text = amount == amount.rounded() ? String(Int(amount)) : String(format: "%.1f", amount)
        return "\(text) \(units[unit])"
    }

    /// A price per second in micros as a price per hour in currency units (`0.036000`).
    static func perHour(_ pricePerSecondMicros: Int64) -> String {
        InvoiceView.decimal(pricePerSecondMicros * 3600, places: 6)
    }
}

/// What a guest has cost so far: its running milliseconds from its journal (the invoice's own
/// rules, `Billing`), from its creation to now, and their amount at its price.
struct GuestBill: Equatable {
    var billedMilliseconds: Int64
    var amountMicros: Int64

    init(guest: CloudGuest, journal: [CloudJournalEntry], now: Date) {
        let changes = journal.map {
            StateChange(sequence: $0.sequence, timeMilliseconds: Billing.milliseconds($0.time), to: $0.to)
        }
        let nowMilliseconds = Billing.milliseconds(now)
        let from = min(Billing.milliseconds(guest.createdAt), changes.first?.timeMilliseconds ?? nowMilliseconds)
        let intervals = Billing.runningIntervals(changes)
        if let period = try? BillingPeriod(fromMilliseconds: from, toMilliseconds: max(from, nowMilliseconds) + 1) {
            billedMilliseconds = Billing.billedMilliseconds(intervals, in: period, now: nowMilliseconds)
        } else {
            billedMilliseconds = 0
        }
        amountMicros = Billing.amountMicros(
            pricePerSecondMicros: guest.pricePerSecondMicros, milliseconds: billedMilliseconds)
    }
}
