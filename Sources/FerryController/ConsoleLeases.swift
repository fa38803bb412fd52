import FerryControl
import FerryHostModel
import Foundation
import Hummingbird

/// The console's lease page (`/console/projects/{p}/leases`): the project's leases, each with its
/// pool, SLA record and a timeline picture; a form to reserve capacity (the project's admin)
/// and, for an open pool, one to create a guest into it. Posts answer 303 to the page.
struct ConsoleLeaseRoutes: Sendable {
    let store: any ControlStore

    func add(to router: RouterGroup<ControllerContext>) {
        router.get("projects/:project/leases") { _, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.readLeases, project: project, notFoundMessage: "no project \(project)")
            return try await page(project, try ConsoleSession(context))
        }
        router.post("projects/:project/leases") { request, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.manageLeases, project: project, notFoundMessage: "no project \(project)")
            let form = FormFields(String(buffer: try await request.body.collect(upTo: .max)))
            do {
                let body = LeaseBody(
                    flavor: form["flavor"] ?? "", count: Int(form["count"] ?? "") ?? 0, start: form["start"] ?? "",
                    end: form["end"] ?? "", atEnd: form["at_end"],
                    image: form["image"].flatMap { $0.isEmpty ? nil : $0 })
                _ = try await store.admitLease(try body.submission(project: project))
                return ConsoleHTML.redirect("/console/projects/\(project)/leases")
            } catch {
                return try await page(project, try ConsoleSession(context), error: CloudAPIError.from(error))
            }
        }
        router.post("leases/:id/cancel") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard let lease = try await store.lease(id: id) else {
                throw CloudAPIError(.notFound, "not_found", "no lease \(id)")
            }
            try context.require(.manageLeases, project: lease.project, notFoundMessage: "no lease \(id)")
            _ = try await store.cancelLease(id: id)
            return ConsoleHTML.redirect("/console/projects/\(lease.project)/leases")
        }
    }

    private func page(_ project: String, _ session: ConsoleSession, error: CloudAPIError? = nil) async throws
        -> Response
    {
        let view = LeasesView(
            project: project, leases: try await store.leases(project: project), flavors: try await store.flavors(),
            images: try await store.images(),
            canManage: session.principal.role(in: project) == .admin
                || session.principal.siteAdmin, csrfToken: session.csrfToken, now: Date(), error: error?.message)
        return ConsoleHTML.render(
            "leases", view, title: "Leases of \(project)", session: session, status: error?.status ?? .ok,
            refreshSeconds: view.leases.contains { $0.phase == "delivering" } ? 2 : nil)
    }
}

struct LeasesView {
    struct Row {
        var id: String
        var flavor: String
        var count: Int
        var window: String
        var atEnd: String
        var phase: String
        var state: String
        var pool: String
        var delivered: String
        var available: String
        var note: String
        var open: Bool
        var cancellable: Bool
        var timeline: String
        var image: String
    }

    var project: String
    var error: String?
    var leases: [Row]
    var flavors: [String]
    var images: [String]
    var canManage: Bool
    var csrfToken: String
    var defaultStart: String
    var defaultEnd: String

    init(
        project: String, leases: [LeaseRecord], flavors: [Flavor], images: [Image], canManage: Bool,
        csrfToken: String, now: Date, error: String?
    ) {
        self.project = project
        self.error = error
        self.flavors = flavors.map(\.name)
        self.images = images.map(\.name)
        self.canManage = canManage
        self.csrfToken = csrfToken
        let minute = (now.timeIntervalSince1970 / 60).rounded(.up) * 60
        defaultStart = CloudViews.time(Date(timeIntervalSince1970: minute + 60))
        defaultEnd = CloudViews.time(Date(timeIntervalSince1970: minute + 3660))
        self.leases = leases.reversed().map { Self.row($0, now: now, canManage: canManage) }
    }

    static func row(_ lease: LeaseRecord, now: Date, canManage: Bool) -> Row {
        let pool = lease.slots.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")
        let delivered = lease.deliveryMilliseconds.map { milliseconds in
            String(format: "%.1f s after its start", Double(milliseconds) / 1000)
                + (milliseconds <= ControlRules.leaseDeliveryGraceMilliseconds ? " (on time)" : " (late)")
        }
        let started = lease.start <= now
        return Row(
            id: lease.id, flavor: lease.flavor, count: lease.count,
            window: "\(CloudViews.time(lease.start)) → \(CloudViews.time(lease.end))", atEnd: lease.atEnd.rawValue,
            phase: lease.phase.rawValue, state: lease.state.rawValue, pool: pool.isEmpty ? "—" : pool,
            delivered: delivered ?? (started ? "not yet" : "—"),
            available: started ? String(format: "%.1f %%", lease.availableFraction(at: now) * 100) : "—",
            note: lease.note, open: lease.phase.open, cancellable: canManage && lease.state == .admitted,
            timeline: LeaseTimeline.svg(lease, now: now), image: lease.image ?? "")
    }
}

/// A lease's window as a bar: waiting for delivery (amber), available (green), short (red),
/// still to come (grey), with a line at now.
enum LeaseTimeline {
    static func svg(_ lease: LeaseRecord, now: Date, width: Double = 480) -> String {
        let start = lease.start.timeIntervalSince1970
        let end = lease.end.timeIntervalSince1970
        let span = max(end - start, 1)
        func x(_ date: Date) -> Double { min(width, max(0, (date.timeIntervalSince1970 - start) / span * width)) }
        let until = min(lease.endedAt ?? now, lease.end)
        var parts: [(Date, Date, String, String)] = []
        if until > lease.start {
            let delivered = min(lease.deliveredAt ?? until, until)
            parts.append((lease.start, delivered, "orange", "waiting for delivery"))
            let shortFrom = lease.shortSince.map { max($0, delivered) } ?? until
            parts.append((delivered, shortFrom, "seagreen", "every unit available"))
            parts.append((shortFrom, until, "firebrick", "short of \(lease.shortUnits) units"))
        }
        parts.append((max(until, lease.start), lease.end, "lightgray", "to come"))
        var body = ""
        func number(_ value: Double) -> String { String(format: "%.1f", value) }
        for (from, to, colour, label) in parts where to > from {
            body +=
                "<rect x=\"\(number(x(from)))\" y=\"4\" width=\"\(number(max(0.5, x(to) - x(from))))\" height=\"16\""
                + " fill=\"\(colour)\"><title>\(label)</title></rect>"
        }
        if now > lease.start && now < lease.end {
            body += "<line x1=\"\(number(x(now)))\" x2=\"\(number(x(now)))\" y1=\"0\" y2=\"24\" stroke=\"black\"/>"
        }
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"the lease's window\" width=\""
            + "\(Int(width))\" height=\"24\" viewBox=\"0 0 \(Int(width)) 24\">\(body)</svg>"
    }
}

extension ConsoleTemplates {
    static let leases = """
        <h1>Leases of {{project}}</h1>
        <p><a href="/console/projects/{{project}}">Guests of {{project}}</a></p>
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        {{#leases}}
        <section class="lease" id="lease-{{id}}">
        <h2>{{count}} × {{flavor}} <span class="state">{{phase}}</span></h2>
        {{{timeline}}}
        <table>
        <tr><th>Window</th><td>{{window}}</td></tr>
        <tr><th>At its end</th><td>{{atEnd}}</td></tr>
        <tr><th>Pool</th><td class="pool">{{pool}}</td></tr>
        <tr><th>Delivered</th><td class="delivered">{{delivered}}</td></tr>
        <tr><th>Available</th><td class="available">{{available}}</td></tr>
        <tr><th>Latest</th><td class="note">{{note}}</td></tr>
        </table>
        {{#open}}
        <form method="post" action="/console/projects/{{project}}/guests">{{>csrf}}
        <input type="hidden" name="lease" value="{{id}}"><input type="hidden" name="flavor" value="{{flavor}}">
        <input type="hidden" name="image" value="{{image}}">
        <label>New guest in this pool <input name="name" pattern="[a-z0-9][a-z0-9._-]*" required></label>
        <button type="submit">Create</button></form>
        {{/open}}
        {{#cancellable}}
        <form class="inline" method="post" action="/console/leases/{{id}}/cancel">{{>csrf}}<button type="submit">Cancel lease</button></form>
        {{/cancellable}}
        </section>
        {{/leases}}
        {{^leases}}<p>No leases yet.</p>{{/leases}}
        {{#canManage}}
        <h2>Reserve capacity</h2>
        <form method="post" action="/console/projects/{{project}}/leases">{{>csrf}}
        <p><label>Flavor <select name="flavor">{{#flavors}}<option>{{.}}</option>{{/flavors}}</select></label>
        <label>Guests <input name="count" type="number" min="1" max="10000" value="1" required></label></p>
        <p><label>Start <input name="start" value="{{defaultStart}}" required></label>
        <label>End <input name="end" value="{{defaultEnd}}" required></label> (RFC 3339, UTC)</p>
        <p><label>At the end <select name="at_end"><option>stop</option><option>suspend</option><option>extend</option></select></label>
        <label>Boot guests of <select name="image"><option value="">no image (an empty pool)</option>{{#images}}<option>{{.}}</option>{{/images}}</select></label></p>
        <p><button type="submit">Reserve</button></p>
        </form>
        {{/canManage}}
        """
}
