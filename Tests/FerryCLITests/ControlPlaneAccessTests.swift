import FerryTestSupport
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Accounts on a real `ferry control`: users log in (an HttpOnly session cookie whose changes
/// carry the CSRF token) or send API tokens; every route answers a user only about the projects
/// they are in. A guest or project of another project is as absent (404) as one that never was;
/// a member asking for an admin's action, or anyone but a site admin for a site action, is
/// refused (403); no credentials, an ended session or a revoked token is 401.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneAccessTests {
    static let password = "correct horse battery staple"

    @Test func everyRouteAnswersOnlyAboutTheCallersProjects() throws {
        let cloud = try ControlPlaneFixture("cpa", agents: 1)
        let http = CloudHTTP(base: cloud.url)
        try addUsers(cloud)
        let alice = try http.token(user: "alice", password: Self.password)
        let bob = try http.token(user: "bob", password: Self.password)
        let carol = try http.token(user: "carol", password: Self.password)
        let (created, guest, _) = try http.call(
            "POST", "/v1/projects/alpha/guests", ["name": "web", "flavor": "tiny", "image": "builtin"], bearer: alice)
        #expect(created == 202, "\(guest)")
        let id = try #require(guest["id"] as? String)

        // Bob is in beta only: alpha and its guest do not exist for him; site actions are refused.
        let absent: [(String, String, [String: Any]?)] = [
            ("GET", "/v1/projects/alpha/guests", nil),
            ("POST", "/v1/projects/alpha/guests", ["name": "x", "flavor": "tiny", "image": "builtin"]),
            ("GET", "/v1/guests/\(id)", nil), ("GET", "/v1/guests/\(id)/journal", nil),
            ("GET", "/v1/guests/\(id)/usage", nil), ("GET", "/v1/projects/alpha/leases", nil),
            (
                "POST", "/v1/projects/alpha/leases",
                ["flavor": "tiny", "count": 1, "start": "2100-01-01T00:00:00Z", "end": "2100-01-02T00:00:00Z"]
            ),
            ("POST", "/v1/guests/\(id)/stop", nil), ("POST", "/v1/guests/\(id)/start", nil),
            ("DELETE", "/v1/guests/\(id)", nil), ("GET", "/v1/projects/alpha/invoice", nil),
            ("GET", "/v1/projects/alpha/members", nil), ("PUT", "/v1/projects/alpha/members/bob", ["role": "admin"]),
            ("DELETE", "/v1/projects/alpha/members/alice", nil),
        ]
        for (method, path, body) in absent {
            let (status, answer, _) = try http.call(method, path, body, bearer: bob)
            #expect(status == 404 && Self.code(answer) == "not_found", "bob \(method) \(path): \(status) \(answer)")
        }
        // The same answer as for a guest that never was, word for word but for the ID.
        let ghost = "0123456789abcdef0123456789abcdef"
        let real = try http.call("GET", "/v1/guests/\(id)", bearer: bob).1
        let never = try http.call("GET", "/v1/guests/\(ghost)", bearer: bob).1
        #expect(Self.message(real)?.replacingOccurrences(of: id, with: ghost) == Self.message(never))

        let siteOnly: [(String, String, [String: Any]?)] = [
            ("GET", "/v1/hosts", nil), ("POST", "/v1/flavors", ["name": "f2"]), ("POST", "/v1/images", ["name": "i2"]),
            ("POST", "/v1/projects", ["name": "gamma"]), ("POST", "/v1/users", ["name": "eve", "password": "x"]),
            ("POST", "/v1/agents/heartbeat", ["host_id": "h9"]),
        ]
        for (method, path, body) in siteOnly {
            let (status, answer, _) = try http.call(method, path, body, bearer: bob)
            #expect(status == 403 && Self.code(answer) == "forbidden", "bob \(method) \(path): \(status) \(answer)")
        }
        let projects = try http.call("GET", "/v1/projects", bearer: bob).1["projects"] as? [[String: Any]]
        #expect(projects?.compactMap { $0["name"] as? String } == ["beta"])
        #expect(try http.call("GET", "/v1/flavors", bearer: bob).0 == 200, "anyone signed in reads the catalogue")

        // Alice is a member of alpha: her guest is hers to read; the invoice and members need
        // alpha's admin, which Carol is.
        #expect(try http.call("GET", "/v1/guests/\(id)", bearer: alice).0 == 200)
        #expect(try http.call("GET", "/v1/projects/alpha/invoice", bearer: alice).0 == 403)
        #expect(try http.call("GET", "/v1/projects/alpha/members", bearer: alice).0 == 403)
        #expect(try http.call("GET", "/v1/projects/alpha/invoice", bearer: carol).0 == 200)
        let members = try http.call("GET", "/v1/projects/alpha/members", bearer: carol).1["members"]
        #expect(members as? [String: String] == ["alice": "member", "carol": "admin"])

        // No credentials at all: 401 everywhere but /healthz.
        for (method, path, body) in absent + siteOnly {
            #expect(try http.call(method, path, body).0 == 401, "\(method) \(path) without credentials")
        }
        #expect(try http.call("GET", "/healthz").0 == 200)
    }

    @Test func sessionsNeedTheirCSRFTokenAndEndAtLogout() throws {
        let cloud = try ControlPlaneFixture("cps", agents: 1)
        let http = CloudHTTP(base: cloud.url)
        try addUsers(cloud)
        let login = try http.call("POST", "/v1/login", ["name": "alice", "password": Self.password])
        #expect(login.0 == 200)
        let cookie = try #require(login.headers["Set-Cookie"])
        #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "\(cookie)")
        let session = try #require(cookie.split(separator: ";").first.map(String.init))
        let csrf = try #require(login.1["csrf_token"] as? String)
        let body: [String: Any] = ["name": "web", "flavor": "tiny", "image": "builtin"]

        let forged = try http.call("POST", "/v1/projects/alpha/guests", body, cookie: session)
        #expect(forged.0 == 403 && Self.code(forged.1) == "csrf", "a change without the CSRF token: \(forged)")
        let wrong = try http.call("POST", "/v1/projects/alpha/guests", body, cookie: session, csrf: "nope")
        #expect(wrong.0 == 403)
        #expect(try http.call("GET", "/v1/projects/alpha/guests", cookie: session).0 == 200, "reads need no token")
        #expect(try http.call("POST", "/v1/projects/alpha/guests", body, cookie: session, csrf: csrf).0 == 202)
        #expect(try http.call("GET", "/v1/me", cookie: session).1["csrf_token"] as? String == csrf)

        // An API token made in the session works until it is revoked.
        let made = try http.call("POST", "/v1/tokens", ["label": "ci"], cookie: session, csrf: csrf).1
        let secret = try #require(made["secret"] as? String)
        let tokenID = try #require(made["id"] as? String)
        #expect(try http.call("GET", "/v1/projects/alpha/guests", bearer: secret).0 == 200)
        let listed = try http.call("GET", "/v1/tokens", bearer: secret).1["tokens"] as? [[String: Any]]
        #expect(listed?.count == 1 && listed?.first?["secret"] == nil, "a token's secret is shown once")
        #expect(try http.call("DELETE", "/v1/tokens/\(tokenID)", cookie: session, csrf: csrf).0 == 204)
        #expect(try http.call("GET", "/v1/projects/alpha/guests", bearer: secret).0 == 401)

        #expect(try http.call("POST", "/v1/logout", cookie: session, csrf: csrf).0 == 204)
        let after = try http.call("GET", "/v1/projects/alpha/guests", cookie: session)
        #expect(after.0 == 401, "an ended session: \(after)")
    }

    @Test func repeatedFailedLoginsAreSlowedDown() throws {
        let cloud = try ControlPlaneFixture("cpt", agents: 1)
        let http = CloudHTTP(base: cloud.url)
        try addUsers(cloud)
        // Three free failures, then waits of 1 s, 2 s, 4 s … after the last failure. Each attempt
        // costs a scrypt hash (a third of a second, more when the suite loads the machine), so an
        // attempt may come after a short wait has passed; the doubling waits outgrow that.
        var statuses: [Int] = []
        while statuses.last != 429 && statuses.count < 8 {
            statuses.append(try http.call("POST", "/v1/login", ["name": "alice", "password": "wrong password!"]).0)
        }
        #expect(Array(statuses.prefix(3)) == [401, 401, 401] && statuses.last == 429, "\(statuses)")
        let throttled = try http.call("POST", "/v1/login", ["name": "alice", "password": Self.password])
        #expect(throttled.0 == 429 && Int(throttled.headers["Retry-After"] ?? "") ?? 0 >= 1, "\(throttled)")
        #expect(try http.call("POST", "/v1/login", ["name": "bob", "password": Self.password]).0 == 200)
        let unknown = try http.call("POST", "/v1/login", ["name": "nobody", "password": Self.password])
        #expect(unknown.0 == 401 && Self.code(unknown.1) == "wrong_credentials")
    }

    /// As the operator (the cluster key): project beta; alice member and carol admin of alpha,
    /// bob member of beta.
    private func addUsers(_ cloud: ControlPlaneFixture) throws {
        let beta: [String: Any] = [
            "name": "beta",
            "quota": ["guests": 10, "resources": ["vcpus": 10, "memory_bytes": 1 << 30, "disk_bytes": 1 << 30]],
        ]
        #expect(try cloud.json("POST", "/v1/projects", beta).0 == 201)
        for (user, project, role) in [
            ("alice", "alpha", "member"), ("carol", "alpha", "admin"), ("bob", "beta", "member"),
        ] {
            let (status, answer) = try cloud.json("POST", "/v1/users", ["name": user, "password": Self.password])
            #expect(status == 201, "\(answer)")
            #expect(try cloud.json("PUT", "/v1/projects/\(project)/members/\(user)", ["role": role]).0 == 200)
        }
    }

    static func code(_ answer: [String: Any]) -> String? { (answer["error"] as? [String: Any])?["code"] as? String }
    static func message(_ answer: [String: Any]) -> String? {
        (answer["error"] as? [String: Any])?["message"] as? String
    }
}

/// A plain HTTP client for the controller's user-facing side: API tokens, session cookies and
/// CSRF headers (no cookie jar: the test sends what it means to).
struct CloudHTTP {
    let base: String

    func call(
        _ method: String, _ path: String, _ body: [String: Any]? = nil, bearer: String? = nil, cookie: String? = nil,
        csrf: String? = nil
    ) throws -> (Int, [String: Any], headers: [String: String]) {
        var request = URLRequest(url: try #require(URL(string: base + path)))
        request.httpMethod = method
        request.httpShouldHandleCookies = false
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
        if let cookie { request.setValue(cookie, forHTTPHeaderField: "Cookie") }
        if let csrf { request.setValue(csrf, forHTTPHeaderField: "X-CSRF-Token") }
        let (status, data, headers) = try perform(request)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return (status, object, headers)
    }

    /// Sends the request as it is (no cookie jar, redirects not followed): status, body, headers.
    func perform(_ request: URLRequest) throws -> (Int, Data, [String: String]) {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpCookieStorage = nil
        let exchange = OneExchange()
        let session = URLSession(configuration: configuration, delegate: exchange, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        session.dataTask(with: request).resume()
        exchange.done.wait()
        if let error = exchange.error { throw error }
        let response = try #require(exchange.response as? HTTPURLResponse)
        var headers: [String: String] = [:]
        for (key, value) in response.allHeaderFields {
            if let key = key as? String, let value = value as? String { headers[key] = value }
        }
        return (response.statusCode, exchange.data, headers)
    }

    /// Logs in and makes an API token in that session; returns the token's secret.
    func token(user: String, password: String) throws -> String {
        let login = try call("POST", "/v1/login", ["name": user, "password": password])
        try #require(login.0 == 200, "login \(user): \(login)")
        let session = try #require(login.headers["Set-Cookie"]?.split(separator: ";").first.map(String.init))
        let csrf = try #require(login.1["csrf_token"] as? String)
        let made = try call("POST", "/v1/tokens", ["label": "test"], cookie: session, csrf: csrf)
        return try #require(made.1["secret"] as? String, "token for \(user): \(made)")
    }
}

/// One request's answer, gathered by the session's delegate; a redirect is not followed (the
/// console answers its forms with 303 and the tests check where to). The delegate's calls come
/// one after another, and `done` orders them before the reader.
final class OneExchange: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let done = DispatchSemaphore(value: 0)
    var data = Data()
    var response: URLResponse?
    var error: (any Error)?

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        self.data.append(data)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        self.error = error
        response = task.response
        done.signal()
    }

    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
        newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void
    ) {
        completionHandler(nil)
    }
}
