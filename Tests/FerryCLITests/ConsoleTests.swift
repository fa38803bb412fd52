import FerryTestSupport
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The web console on a real `ferry control` with one agent, as a browser without JavaScript
/// uses it: GET pages, POST url-encoded forms, follow 303s, send the session cookie back.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ConsoleTests {
    static let password = "correct horse battery staple"

    @Test func logInCreateAGuestByFormWatchItRunAndDeleteIt() throws {
        let cloud = try ControlPlaneFixture("con", agents: 1)
        try addUsers(cloud)
        let browser = ConsoleBrowser(http: CloudHTTP(base: cloud.url))

        // No session: the login page, not the API's 401.
        let anonymous = try browser.get("/console")
        #expect(anonymous.status == 303 && anonymous.location == "/console/login", "\(anonymous.status)")
        #expect(try browser.get("/console/guests/0123456789abcdef0123456789abcdef").location == "/console/login")
        let form = try browser.get("/console/login")
        #expect(form.status == 200 && form.body.contains(#"name="password""#))
        let forged = try browser.post("/console/login", ["name": "alice", "password": Self.password])
        #expect(
            forged.status == 403 && forged.headers["Set-Cookie"]?.contains("ferry_session") != true,
            "a login posted without the form's token (another site's)")
        let wrong = try browser.attemptLogin("alice", "not her password")
        #expect(wrong.status == 401 && wrong.body.contains(#"class="error""#), "\(wrong.status)")
        // What a user typed comes back escaped.
        let typed = try browser.attemptLogin("<b>x</b>\"", "whatever it is")
        #expect(typed.status == 401 && typed.body.contains("&lt;b&gt;x&lt;/b&gt;&quot;"), "\(typed.body)")
        #expect(!typed.body.contains("<b>x</b>"))

        let alice = try browser.logIn("alice", Self.password)
        let home = try alice.get("/console")
        #expect(home.status == 200 && home.body.contains(#"href="/console/projects/alpha""#), "\(home.body)")
        let project = try alice.get("/console/projects/alpha")
        #expect(project.status == 200)
        // The flavor with its vCPUs, memory, disk and price per hour (10 µ/s = 0.036 per hour).
        for text in ["tiny", "16 MiB", "4 MiB", "0.036000", "builtin"] {
            #expect(project.body.contains(text), "the project page shows \(text)")
        }
        let csrf = try #require(project.field("csrf_token"))
        let clientToken = try #require(project.field("client_token"))
        let create = ["name": "web", "flavor": "tiny", "image": "builtin", "client_token": clientToken]

        // Without the CSRF token the form is refused; with it, the guest is made once however
        // often the same form is sent.
        #expect(try alice.post("/console/projects/alpha/guests", create).status == 403)
        let made = try alice.post("/console/projects/alpha/guests", create.merging(["csrf_token": csrf]) { $1 })
        #expect(made.status == 303, "\(made.status) \(made.body)")
        let guestPage = try #require(made.location)
        #expect(guestPage.hasPrefix("/console/guests/"))
        let again = try alice.post("/console/projects/alpha/guests", create.merging(["csrf_token": csrf]) { $1 })
        #expect(again.location == guestPage, "a double submit goes to the same guest")
        let listed = try cloud.json("GET", "/v1/projects/alpha/guests").1["guests"] as? [Any]
        #expect(listed?.count == 1, "one guest for two submits of one form")

        // A page of a guest still being built reloads itself every 2 s; a running guest's does not.
        let first = try alice.get(guestPage).body
        if first.contains(#"id="state">pending<"#) || first.contains(#"id="state">building<"#) {
            #expect(first.contains(#"<meta http-equiv="refresh" content="2">"#))
        }
        let running = try alice.waitFor(guestPage) { $0.contains(#"id="state">running<"#) }
        #expect(!running.contains("http-equiv=\"refresh\""))
        // The console's last lines, from the host's agent.
        let console = try alice.waitFor(guestPage, timeout: 10) { $0.contains(#"<pre class="console">"#) }
        #expect(console.contains("ferry vmm"), "\(console)")
        #expect(running.contains(#"id="bill-amount""#) && running.contains("/stop\""), "\(running)")
        #expect(running.contains("pending") && running.contains("building"), "the journal is shown")

        // Bob is in beta only: alice's guest does not exist for him; the site page is not his.
        let bob = try browser.logIn("bob", Self.password)
        let hidden = try bob.get(guestPage)
        #expect(hidden.status == 404 && hidden.body.contains("no guest"), "\(hidden.status)")
        #expect(hidden.body.contains(#"class="who">bob<"#), "the 404 page is bob's, with his logout")
        #expect(try bob.get("/console/projects/alpha").status == 404)
        #expect(try bob.get("/console/admin").status == 403)
        #expect(try alice.get("/console/admin").status == 403)
        let root = try browser.logIn("root", Self.password)
        let admin = try root.get("/console/admin")
        #expect(admin.status == 200 && admin.body.contains("h1") && admin.body.contains("beta"), "\(admin.body)")
        #expect(admin.body.contains(#"id="power-h1">on<"#), "the power column: \(admin.body)")
        // A host's maintenance by the site page's forms: a drain with nowhere to go (this cloud has
        // one host) keeps the guest where it is, says so, and is reversed by undrain.
        let rootCSRF = try #require(admin.field("csrf_token"))
        #expect(try alice.post("/console/hosts/h1/drain", ["csrf_token": csrf]).status == 403)
        #expect(try root.post("/console/hosts/h1/drain", [:]).status == 403, "a form without the CSRF token")
        let drained = try root.post("/console/hosts/h1/drain", ["csrf_token": rootCSRF])
        #expect(drained.status == 303 && drained.location == "/console/admin", "\(drained.status) \(drained.body)")
        // The guest's failure shows a moment before the drain's end ("draining: … 1 failed"):
        // wait for the end.
        let page = try root.waitFor("/console/admin") { $0.contains("incomplete: 0 of 1 moved, 1 failed") }
        #expect(page.contains(#"id="mode-h1">draining<"#), "\(page)")
        #expect(page.contains(#"id="drain-h1">host h1 incomplete: 0 of 1 moved, 1 failed"#), "\(page)")
        #expect(page.contains(#"action="/console/hosts/h1/undrain""#), "\(page)")
        let undrained = try root.post("/console/hosts/h1/undrain", ["csrf_token": rootCSRF])
        #expect(undrained.location == "/console/admin")
        #expect(try root.get("/console/admin").body.contains(#"id="mode-h1">active<"#))

        // Stop, then delete, by the guest page's forms.
        let id = String(guestPage.dropFirst("/console/guests/".count))
        #expect(try alice.post("\(guestPage)/stop", ["csrf_token": csrf]).location == "\(guestPage)?done=stop")
        _ = try alice.waitFor(guestPage) { $0.contains(#"id="state">stopped<"#) }
        let deleted = try alice.post("\(guestPage)/delete", ["csrf_token": csrf])
        #expect(deleted.location == "/console/projects/alpha")
        #expect(try cloud.json("GET", "/v1/guests/\(id)").1["state"] as? String == "deleted")

        // Logging out ends the session: its cookie leads to the login page again.
        let out = try alice.post("/console/logout", ["csrf_token": csrf])
        #expect(out.status == 303 && out.location == "/console/login")
        #expect(try alice.get("/console").location == "/console/login")
    }

    /// As the operator: project beta; alice member of alpha, bob member of beta, root a site admin.
    private func addUsers(_ cloud: ControlPlaneFixture) throws {
        let beta: [String: Any] = [
            "name": "beta",
            "quota": ["guests": 10, "resources": ["vcpus": 10, "memory_bytes": 1 << 30, "disk_bytes": 1 << 30]],
        ]
        #expect(try cloud.json("POST", "/v1/projects", beta).0 == 201)
        for user in ["alice", "bob", "root"] {
            let body: [String: Any] = ["name": user, "password": Self.password, "site_admin": user == "root"]
            #expect(try cloud.json("POST", "/v1/users", body).0 == 201)
        }
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/alice", ["role": "member"]).0 == 200)
        #expect(try cloud.json("PUT", "/v1/projects/beta/members/bob", ["role": "member"]).0 == 200)
    }
}

/// A browser without JavaScript: pages by GET, url-encoded forms by POST, one session cookie,
/// redirects left to the caller.
struct ConsoleBrowser {
    let http: CloudHTTP
    var cookie: String?

    init(http: CloudHTTP, cookie: String? = nil) {
        self.http = http
        self.cookie = cookie
    }

    struct Page {
        var status: Int
        var body: String
        var headers: [String: String]
        var location: String? { headers["Location"] }

        /// The value of a hidden form field (`name="csrf_token" value="…"`).
        func field(_ name: String) -> String? {
            guard let start = body.range(of: #"name="\#(name)" value=""#) else { return nil }
            return String(body[start.upperBound...].prefix { $0 != "\"" })
        }
    }

    func get(_ path: String) throws -> Page { try send("GET", path, nil) }

    func post(_ path: String, _ form: [String: String]) throws -> Page { try send("POST", path, form) }

    /// Gets the login form (its CSRF token, and the cookie that carries it too) and posts it.
    func attemptLogin(_ name: String, _ password: String) throws -> Page {
        let form = try get("/console/login")
        let token = try #require(form.field("csrf_token"), "the login form has no CSRF token")
        let cookie = try #require(form.headers["Set-Cookie"]?.split(separator: ";").first.map(String.init))
        #expect(cookie.hasPrefix("ferry_login_csrf="))
        return try ConsoleBrowser(http: http, cookie: cookie).post(
            "/console/login", ["name": name, "password": password, "csrf_token": token])
    }

    /// Logs in by the form; a browser with the session cookie.
    func logIn(_ name: String, _ password: String) throws -> ConsoleBrowser {
        let answer = try attemptLogin(name, password)
        try #require(answer.status == 303 && answer.location == "/console", "login \(name): \(answer.status)")
        let setCookie = try #require(answer.headers["Set-Cookie"])
        #expect(setCookie.contains("ferry_session=") && setCookie.contains("HttpOnly"), "\(setCookie)")
        return ConsoleBrowser(http: http, cookie: setCookie.split(separator: ";").first.map(String.init))
    }

    /// GETs the page until `done` holds for its body (at most `timeout` s); its last body.
    func waitFor(_ path: String, timeout: Double = 30, _ done: (String) -> Bool) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            last = try get(path).body
            if done(last) { return last }
            usleep(100_000)
        }
        Issue.record("\(path) did not reach the expected state within \(timeout) s")
        return last
    }

    private func send(_ method: String, _ path: String, _ form: [String: String]?) throws -> Page {
        var request = URLRequest(url: try #require(URL(string: http.base + path)))
        request.httpMethod = method
        request.httpShouldHandleCookies = false
        if let cookie { request.setValue(cookie, forHTTPHeaderField: "Cookie") }
        if let form {
            request.httpBody = Data(Self.encode(form).utf8)
            request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        }
        let (status, data, headers) = try http.perform(request)
        return Page(status: status, body: String(decoding: data, as: UTF8.self), headers: headers)
    }

    /// `application/x-www-form-urlencoded`, as a browser sends a form.
    static func encode(_ form: [String: String]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return form.sorted { $0.key < $1.key }.map { key, value in
            let encode = { (text: String) in text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text }
            return encode(key) + "=" + encode(value)
        }.joined(separator: "&")
    }
}

/// The console's lease page: a project admin reserves capacity by form; the page shows the
/// lease's phase, pool and window as a picture; once delivered, a guest is created into the pool
/// by the page's form; a member sees the page without the forms that need an admin.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ConsoleLeaseTests {
    @Test func anAdminReservesCapacityAndCreatesIntoItsPool() throws {
        let cloud = try ControlPlaneFixture("conl", agents: 1)
        for (user, role) in [("carol", "admin"), ("dave", "member")] {
            let body: [String: Any] = ["name": user, "password": ConsoleTests.password]
            #expect(try cloud.json("POST", "/v1/users", body).0 == 201)
            #expect(try cloud.json("PUT", "/v1/projects/alpha/members/\(user)", ["role": role]).0 == 200)
        }
        let browser = ConsoleBrowser(http: CloudHTTP(base: cloud.url))
        let carol = try browser.logIn("carol", ConsoleTests.password)
        let page = try carol.get("/console/projects/alpha/leases")
        #expect(page.status == 200 && page.body.contains("No leases yet") && page.body.contains("Reserve"))
        let csrf = try #require(page.field("csrf_token"))
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: false)
        let start = Date() + 2
        let reserve = [
            "csrf_token": csrf, "flavor": "tiny", "count": "1", "start": start.formatted(style),
            "end": (start + 600).formatted(style), "at_end": "stop", "image": "",
        ]
        let made = try carol.post("/console/projects/alpha/leases", reserve)
        #expect(made.status == 303 && made.location == "/console/projects/alpha/leases", "\(made.status) \(made.body)")
        let tooMany = try carol.post(
            "/console/projects/alpha/leases", reserve.merging(["count": "1000"]) { $1 })
        #expect(tooMany.status == 409 && tooMany.body.contains("falls short"), "\(tooMany.status)")

        let active = try carol.waitFor("/console/projects/alpha/leases") { $0.contains(">active<") }
        #expect(active.contains("<svg") && active.contains("h1 × 1") && active.contains("(on time)"), "\(active)")
        let lease = try #require(
            active.range(of: #"name="lease" value=""#).map { String(active[$0.upperBound...].prefix(16)) })
        let created = try carol.post(
            "/console/projects/alpha/guests",
            ["csrf_token": csrf, "lease": lease, "flavor": "tiny", "image": "builtin", "name": "pooled"])
        let guestPage = try #require(created.location, "\(created.status) \(created.body)")
        let id = String(guestPage.dropFirst("/console/guests/".count))
        #expect(try cloud.json("GET", "/v1/guests/\(id)").1["lease"] as? String == lease)

        let dave = try browser.logIn("dave", ConsoleTests.password)
        let seen = try dave.get("/console/projects/alpha/leases")
        #expect(seen.status == 200 && seen.body.contains(">active<"))
        #expect(!seen.body.contains("Cancel lease") && !seen.body.contains("Reserve capacity"))
        let daves = try #require(seen.field("csrf_token"))
        let refused = try dave.post("/console/leases/\(lease)/cancel", ["csrf_token": daves])
        #expect(refused.status == 403, "a member may not cancel: \(refused.status)")
        #expect(try carol.post("/console/leases/\(lease)/cancel", ["csrf_token": csrf]).status == 303)
        #expect(try cloud.json("GET", "/v1/leases/\(lease)").1["phase"] as? String == "ended")
    }
}
