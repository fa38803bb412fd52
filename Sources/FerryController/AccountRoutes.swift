import FerryAgent
import FerryControl
import Foundation
import Hummingbird

/// Logging in and out, API tokens, users and project members (docs/control-plane.md, "Accounts").
struct AccountRoutes: Sendable {
    let accounts: AccountService
    let store: any AccountStore
    /// Whether the session cookie is marked Secure (the controller is served over HTTPS).
    let secureCookies: Bool

    func add(to router: Router<ControllerContext>) {
        router.post("/v1/login") { request, _ in
            let body = try await CatalogueRoutes.decode(LoginBody.self, request)
            let session = try await accounts.login(name: body.name, password: body.password, now: Date())
            var response = try CloudRoutes.json(
                SessionView(principal: session.principal, csrfToken: session.csrfToken, expires: session.expires))
            response.setCookie(Self.sessionCookie(session.token, expires: session.expires, secure: secureCookies))
            return response
        }
        router.post("/v1/logout") { _, context in
            guard case .session(_, let token) = context.caller else {
                throw CloudAPIError(
                    .badRequest, "not_a_session", "logout ends a browser session; revoke an API token instead")
            }
            try await accounts.logout(token: token)
            var response = Response(status: .noContent)
            response.setCookie(Self.sessionCookie("", expires: Date(timeIntervalSince1970: 0), secure: secureCookies))
            return response
        }
        router.get("/v1/me") { _, context in
            let principal = try context.principal()
            var csrf: String? = nil
            if case .session(let session, _) = context.caller { csrf = session.csrfToken }
            return try CloudRoutes.json(MeView(principal: principal, csrfToken: csrf))
        }
        addTokens(to: router)
        addUsers(to: router)
    }

    private func addTokens(to router: Router<ControllerContext>) {
        router.post("/v1/tokens") { request, context in
            let user = try Self.user(context)
            let body = try await CatalogueRoutes.decode(TokenBody.self, request)
            let token = try await accounts.createAPIToken(user: user, label: body.label, now: Date())
            return try CloudRoutes.json(TokenView(token.record, secret: token.secret), status: .created)
        }
        router.get("/v1/tokens") { _, context in
            let tokens = try await store.apiTokens(user: try Self.user(context))
            return try CloudRoutes.json(["tokens": tokens.map { TokenView($0, secret: nil) }])
        }
        router.delete("/v1/tokens/:id") { _, context in
            try await accounts.revokeAPIToken(id: context.parameters.get("id") ?? "", user: try Self.user(context))
            return Response(status: .noContent)
        }
    }

    private func addUsers(to router: Router<ControllerContext>) {
        router.post("/v1/users") { request, context in
            try context.require(.manageProjects)
            let body = try await CatalogueRoutes.decode(UserBody.self, request)
            try await accounts.addUser(
                name: body.name, password: body.password, siteAdmin: body.siteAdmin ?? false, now: Date())
            return try CloudRoutes.json(["name": body.name], status: .created)
        }
        router.put("/v1/projects/:project/members/:user") { request, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.manageMembers, project: project, notFoundMessage: "no project \(project)")
            let body = try await CatalogueRoutes.decode(MemberBody.self, request)
            let user = context.parameters.get("user") ?? ""
            try await store.setMembership(user: user, project: project, role: body.role)
            return try CloudRoutes.json(["user": user, "project": project, "role": body.role.rawValue])
        }
        router.delete("/v1/projects/:project/members/:user") { _, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.manageMembers, project: project, notFoundMessage: "no project \(project)")
            try await store.setMembership(user: context.parameters.get("user") ?? "", project: project, role: nil)
            return Response(status: .noContent)
        }
        router.get("/v1/projects/:project/members") { _, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.manageMembers, project: project, notFoundMessage: "no project \(project)")
            let members = try await store.members(project: project)
            return try CloudRoutes.json(["members": members.mapValues(\.rawValue)])
        }
    }

    /// The user a token or session belongs to (the cluster key is nobody's).
    static func user(_ context: ControllerContext) throws -> String {
        switch context.caller {
        case .token(let principal): return principal.user
        case .session(let session, _): return session.principal.user
        case .cluster:
            throw CloudAPIError(
                .forbidden, "forbidden", "the cluster key belongs to no user: log in as one (POST /v1/login)")
        case nil: throw CloudAPIError.unauthenticated
        }
    }

    /// The session cookie (HttpOnly, SameSite=Lax; Secure if `secure`), for the API's login and the console's.
    static func sessionCookie(_ value: String, expires: Date, secure: Bool) -> Cookie {
        Cookie(
            name: CloudAuthenticationMiddleware.sessionCookie, value: value, expires: expires,
            maxAge: max(0, Int(expires.timeIntervalSinceNow)), path: "/", secure: secure, httpOnly: true,
            sameSite: .lax)
    }
}

struct LoginBody: Codable, Sendable {
    var name: String
    var password: String
}

struct TokenBody: Codable, Sendable {
    var label: String
}

struct UserBody: Codable, Sendable {
    var name: String
    var password: String
    var siteAdmin: Bool?

    enum CodingKeys: String, CodingKey {
        case name, password
        case siteAdmin = "site_admin"
    }
}

struct MemberBody: Codable, Sendable {
    var role: ProjectRole
}

extension ProjectRole: Codable {}

struct SessionView: Codable, Sendable {
    var user: String
    var siteAdmin: Bool
    var projects: [String: String]
    var csrfToken: String
    var expires: String

    init(principal: Principal, csrfToken: String, expires: Date) {
        user = principal.user
        siteAdmin = principal.siteAdmin
        projects = principal.memberships.mapValues(\.rawValue)
        self.csrfToken = csrfToken
        self.expires = CloudViews.time(expires)
    }

    enum CodingKeys: String, CodingKey {
        case user, projects, expires
        case siteAdmin = "site_admin"
        case csrfToken = "csrf_token"
    }
}

struct MeView: Codable, Sendable {
    var user: String
    var siteAdmin: Bool
    var projects: [String: String]
    var csrfToken: String?

    init(principal: Principal, csrfToken: String?) {
        user = principal.user
        siteAdmin = principal.siteAdmin
        projects = principal.memberships.mapValues(\.rawValue)
        self.csrfToken = csrfToken
    }

    enum CodingKeys: String, CodingKey {
        case user, projects
        case siteAdmin = "site_admin"
        case csrfToken = "csrf_token"
    }
}

struct TokenView: Codable, Sendable {
    var id: String
    var label: String
    var created: String
    var lastUsed: String?
    /// Shown once, when the token is made.
    var secret: String?

    init(_ record: APITokenRecord, secret: String?) {
        id = record.id
        label = record.label
        created = CloudViews.time(record.created)
        lastUsed = record.lastUsed.map(CloudViews.time)
        self.secret = secret
    }

    enum CodingKeys: String, CodingKey {
        case id, label, created, secret
        case lastUsed = "last_used"
    }
}
