import FerryControl
import Hummingbird

/// What a request to the controller carries past its authentication: who asks, and how.
struct ControllerContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var caller: Caller?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    /// Who sent the request and with which credential.
    enum Caller: Sendable {
        /// Signed with the cluster key (agents, and the operator's own tools): a site admin, and
        /// the only caller whose heartbeats count.
        case cluster
        /// A user's API token (`Authorization: Bearer`).
        case token(Principal)
        /// A user's browser session (the HttpOnly cookie); its changes carry the CSRF token.
        case session(AuthenticatedSession, token: String)
    }

    /// The principal the route decides for: the cluster key acts as a site admin.
    func principal() throws -> Principal {
        switch caller {
        case .cluster: Principal(user: "cluster-key", siteAdmin: true)
        case .token(let principal): principal
        case .session(let session, _): session.principal
        case nil: throw CloudAPIError.unauthenticated
        }
    }

    /// Throws unless the caller may do `action` to a resource of `project`: a project the
    /// caller is not in answers exactly as `notFoundMessage` would for a missing resource.
    func require(_ action: ProjectAction, project: String, notFoundMessage: String) throws {
        try Authorization.require(try principal(), action, project: project, notFoundMessage: notFoundMessage)
    }

    func require(_ action: SiteAction) throws {
        try Authorization.require(try principal(), action)
    }
}

extension CloudAPIError {
    static let unauthenticated = CloudAPIError(
        .unauthorized, "unauthenticated",
        "no credentials: log in (POST /v1/login, or the console's login page), or send an API token as `Authorization: Bearer TOKEN`"
    )
}
