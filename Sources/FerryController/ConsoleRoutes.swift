import FerryAgent
import FerryControl
import FerryHostModel
import FerryTransport
import Foundation
import Hummingbird

/// The web console (`/console`): server-rendered pages over the same store, services and
/// authorization as the JSON API. Plain HTML forms, no JavaScript: each POST answers 303 to the
/// page that shows its outcome. A request without a session is sent to the login page
/// (`ConsoleErrors`); another project's guest is a 404 page, a site page for a non-admin a 403.
struct ConsoleRoutes: Sendable {
    let accounts: AccountService
    let store: any ControlStore
    let provisioner: GuestProvisioner
    let mover: GuestMover
    let drainer: HostDrainer
    let key: SharedKey
    let work: BlockingWork
    let heartbeatTimeout: Duration
    let secureCookies: Bool

    static let loginPath = "/console/login"
    /// The login form's CSRF token, also a hidden field of the form (double submit): another
    /// site can make a browser post the form, with a name and password of its choosing, but
    /// cannot read or set this cookie, so it cannot log the browser into its own account.
    static let loginCookie = "ferry_login_csrf"

    func add(to router: Router<ControllerContext>) {
        let router = router.group("/console").add(middleware: ConsoleErrorMiddleware())
        router.get("login") { _, _ in loginForm(error: nil, name: "") }
        router.post("login") { request, _ in try await login(request) }
        router.post("logout") { _, context in
            if case .session(_, let token) = context.caller { try await accounts.logout(token: token) }
            var response = ConsoleHTML.redirect(Self.loginPath)
            response.setCookie(
                AccountRoutes.sessionCookie("", expires: Date(timeIntervalSince1970: 0), secure: secureCookies))
            return response
        }
        router.get { _, context in try await projects(context) }
        router.get("projects/:project") { _, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.listGuests, project: project, notFoundMessage: "no project \(project)")
            return try await projectPage(project, ConsoleSession(context))
        }
        router.post("projects/:project/guests") { request, context in try await create(request, context) }
        addGuests(to: router)
        ConsoleLeaseRoutes(store: store).add(to: router)
        ConsoleGroupRoutes(store: store).add(to: router)
        router.get("admin") { _, context in try await admin(context) }
    }

    private func addGuests(to router: RouterGroup<ControllerContext>) {
        router.get("guests/:id") { request, context in
            try await guestPage(
                try await guest(context, .readGuest), ConsoleSession(context),
                done: request.uri.queryParameters.get("done"))
        }
        addGuestActions(to: router)
        router.post("hosts/:id/drain") { _, context in
            try context.require(.manageHosts)
            let host = context.parameters.get("id") ?? ""
            _ = try await drainer.drain(host, cause: "drain asked by \(try context.principal().user) (console)")
            return ConsoleHTML.redirect("/console/admin")
        }
        router.post("hosts/:id/undrain") { _, context in
            try context.require(.manageHosts)
            let host = context.parameters.get("id") ?? ""
            _ = try await drainer.undrain(host, cause: "undrain asked by \(try context.principal().user) (console)")
            return ConsoleHTML.redirect("/console/admin")
        }
    }

    /// `AccountService.login` with the form's name and password: the session cookie and a 303 to
    /// the projects, or the form again with the reason (401; 429 with `Retry-After`).
    private func login(_ request: Request) async throws -> Response {
        let form = FormFields(String(buffer: try await request.body.collect(upTo: .max)))
        let name = form["name"] ?? ""
        let presented = Array((form["csrf_token"] ?? "").utf8)
        guard let expected = request.cookies[Self.loginCookie]?.value, !presented.isEmpty,
            Secrets.equalInConstantTime(presented, Array(expected.utf8))
        else {
            return loginForm(
                error: "the login form had expired or came from another site: log in again", name: name,
                status: .forbidden)
        }
        do {
            let session = try await accounts.login(name: name, password: form["password"] ?? "", now: Date())
            var response = ConsoleHTML.redirect("/console")
            response.setCookie(
                AccountRoutes.sessionCookie(session.token, expires: session.expires, secure: secureCookies))
            return response
        } catch {
            let answer = CloudAPIError.from(error)
            var response = loginForm(error: answer.message, name: name, status: answer.status)
            if let seconds = answer.retryAfterSeconds { response.headers[.retryAfter] = String(seconds) }
            return response
        }
    }

    /// The login form with a fresh CSRF token, in the form and in a cookie only this path gets.
    private func loginForm(error: String?, name: String, status: HTTPResponse.Status = .ok) -> Response {
        let token = Secrets.randomToken()
        var response = ConsoleHTML.render(
            "login", LoginView(error: error, name: name, csrfToken: token), title: "Log in", session: nil,
            status: status)
        response.setCookie(
            Cookie(
                name: Self.loginCookie, value: token, maxAge: 3600, path: Self.loginPath, secure: secureCookies,
                httpOnly: true, sameSite: .strict))
        return response
    }

    private func projects(_ context: ControllerContext) async throws -> Response {
        let session = try ConsoleSession(context)
        var rows: [ProjectsView.Row] = []
        for project in session.principal.visible(try await store.projects()) {
            let live = try await store.guests(project: project.name).filter { $0.state != .deleted }
            let role = session.principal.role(in: project.name)?.rawValue ?? ""
            rows.append(ProjectsView.Row(name: project.name, role: role, guests: live.count))
        }
        return ConsoleHTML.render("projects", ProjectsView(projects: rows), title: "Projects", session: session)
    }

    private func projectPage(
        _ project: String, _ session: ConsoleSession, form: FormFields? = nil, error: CloudAPIError? = nil
    ) async throws -> Response {
        var view = ProjectView(
            project: project, guests: try await store.guests(project: project), flavors: try await store.flavors(),
            images: try await store.images(), csrfToken: session.csrfToken, form: form, error: error?.message)
        view.groups = try await store.scalingGroups(project: project).map(GroupRow.init)
        return ConsoleHTML.render(
            "project", view, title: "Project \(project)", session: session, status: error?.status ?? .ok)
    }

    /// The API's create, with the form's client token: a double submit makes one guest, and
    /// both answers go to its page. A refusal shows the form again with the reason.
    private func create(_ request: Request, _ context: ControllerContext) async throws -> Response {
        let project = context.parameters.get("project") ?? ""
        try context.require(.createGuest, project: project, notFoundMessage: "no project \(project)")
        let session = try ConsoleSession(context)
        let form = FormFields(String(buffer: try await request.body.collect(upTo: .max)))
        do {
            let name: GuestName
            do throws(HostModelError) { name = try GuestName(form["name"] ?? "") } catch {
                throw CloudAPIError(.unprocessableContent, "invalid_field", "name: \(error.message)", field: "name")
            }
            let token = form["client_token"].flatMap { $0.isEmpty ? nil : $0 }
            let creation = try await store.createGuest(
                GuestRequest(
                    project: project, name: name, flavor: form["flavor"] ?? "", image: form["image"] ?? "",
                    lease: form["lease"].flatMap { $0.isEmpty ? nil : $0 }),
                clientToken: token, cause: "console: create")
            if creation.created { Task { await provisioner.build(creation.guest) } }
            return ConsoleHTML.redirect("/console/guests/\(creation.guest.id.hex)")
        } catch {
            return try await projectPage(project, session, form: form, error: CloudAPIError.from(error))
        }
    }

    /// The guest's page; `done` the action whose notice it shows, `error` a refused action's reason
    /// (with its status).
    func guestPage(_ guest: CloudGuest, _ session: ConsoleSession, done: String? = nil, error: CloudAPIError? = nil)
        async throws -> Response
    {
        let journal = try await store.journal(of: guest.id)
        let hosts = try await store.hosts()
        let address = hosts.first { $0.id == guest.host }?.address
        let console = await consoleOutput(guest, address: address)
        var view = GuestPageView(
            guest, journal: journal, hostAddress: address, console: console, csrfToken: session.csrfToken, now: Date(),
            error: error?.message)
        let date = Date()
        view.offer(
            session.principal, guest: guest,
            destinations: hosts.filter { $0.takesGuests(at: date, heartbeatTimeout: heartbeatTimeout) }.map(\.id))
        view.notice = error == nil ? GuestPageView.notice(done, guest: guest) : nil
        let now = Billing.milliseconds(Date())
        let since = now - 10 * 60_000
        let samples = try await store.samples(guests: [guest.id], sinceMilliseconds: since)[guest.id] ?? []
        view.usageChart = UsageChart.svg(
            Telemetry.usage(samples), from: since, to: now,
            title: "CPU use and load of \(guest.name.value), last 10 minutes")
        return ConsoleHTML.render(
            "guest", view, title: "Guest \(guest.name.value)", session: session, status: error?.status ?? .ok,
            refreshSeconds: GuestPageView.refreshes(guest) ? 2 : nil)
    }

    /// The last lines of the guest's console from its host's agent (`GET
    /// /v1/guests/{name}/console`), within two seconds; a host that does not answer leaves a note.
    private func consoleOutput(_ guest: CloudGuest, address: String?) async -> ConsoleOutput {
        guard [.building, .running, .stopping].contains(guest.state), let address else {
            return ConsoleOutput(lines: [], note: "The console shows while the guest runs.")
        }
        let name = GuestProvisioner.hostName(guest.id)
        do {
            let client = try AgentClient(url: address, key: key, timeoutMs: 2000)
            let page = try await work.run {
                try client.get("/v1/guests/\(name)/console?since=0&limit=10000", as: FerryAgent.ConsolePage.self)
            }
            let lines = page.lines.suffix(40).map(\.text)
            return ConsoleOutput(lines: Array(lines), note: lines.isEmpty ? "No console output yet." : nil)
        } catch {
            return ConsoleOutput(lines: [], note: "The host did not give the console: \(error)")
        }
    }

    private func admin(_ context: ControllerContext) async throws -> Response {
        try context.require(.manageHosts)
        var projects: [(Project, ProjectUsage)] = []
        for project in try await store.projects() {
            projects.append((project, try await store.usage(project: project.name)))
        }
        let hosts = try await store.hosts()
        var drains: [String: String] = [:]
        for host in hosts { drains[host.id] = drainer.report(host.id)?.summary }
        let session = try ConsoleSession(context)
        let view = AdminView(
            hosts: hosts, usage: try await store.hostUsage(), projects: projects, now: Date(),
            heartbeatTimeout: heartbeatTimeout, drains: drains, csrfToken: session.csrfToken)
        return ConsoleHTML.render("admin", view, title: "Site", session: session)
    }

    /// The guest the path names, if the caller may do `action` to it; another project's guest
    /// is as absent as one that never was.
    func guest(_ context: ControllerContext, _ action: ProjectAction) async throws -> CloudGuest {
        let text = context.parameters.get("id") ?? ""
        guard let id = try? GuestID(text), let guest = try await store.guest(id: id) else {
            throw CloudAPIError(.notFound, "not_found", "no guest \(text)")
        }
        try context.require(action, project: guest.project, notFoundMessage: "no guest \(text)")
        return guest
    }
}

/// A console route's failure as a page for the signed-in user (the header keeps their name and
/// logout), or, without a session, the login page. What fails before the route (no session, a
/// form without the CSRF token) is `CloudErrorMiddleware`'s, which answers the same way.
struct ConsoleErrorMiddleware: RouterMiddleware {
    typealias Context = ControllerContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let answer = CloudAPIError.from(error)
            if answer.status == .unauthorized { return ConsoleHTML.redirect(ConsoleRoutes.loginPath) }
            if answer.status.code >= 500 {
                context.logger.error(
                    "console request failed",
                    metadata: ["api.path": "\(request.uri.path)", "api.error": "\(answer.message)"])
            }
            return ConsoleHTML.error(answer, session: try? ConsoleSession(context))
        }
    }
}
