/// A user's role in a project: a `member` runs the project's guests; an `admin` also reads its
/// invoice and manages its members.
public enum ProjectRole: String, Sendable, Hashable, CaseIterable, Comparable {
    case member
    case admin

    public static func < (a: ProjectRole, b: ProjectRole) -> Bool { a == .member && b == .admin }
}

/// Who is asking: a signed-in user (a session) or a script (an API token) acting as that user.
public struct Principal: Sendable, Hashable {
    public var user: String
    /// A site admin manages the cluster (hosts, catalogue, projects, quotas) and is an admin of
    /// every project.
    public var siteAdmin: Bool
    /// The user's role in each project they belong to.
    public var memberships: [String: ProjectRole]

    public init(user: String, siteAdmin: Bool = false, memberships: [String: ProjectRole] = [:]) {
        self.user = user
        self.siteAdmin = siteAdmin
        self.memberships = memberships
    }

    /// The role this principal acts with in `project`: a site admin's is `admin` everywhere.
    public func role(in project: String) -> ProjectRole? {
        siteAdmin ? .admin : memberships[project]
    }

    /// Whether the project exists for this principal at all: a project it is not in looks absent.
    public func sees(project: String) -> Bool { role(in: project) != nil }

    /// Of `projects`, the ones this principal sees (what a project list shows it).
    public func visible(_ projects: [Project]) -> [Project] { projects.filter { sees(project: $0.name) } }
}

/// What can be done to a project's resources.
public enum ProjectAction: String, Sendable, Hashable, CaseIterable {
    case listGuests
    case readGuest
    case createGuest
    case stopGuest
    case startGuest
    case deleteGuest
    case readInvoice
    case manageMembers
    /// See the project's leases (reservations of capacity).
    case readLeases
    /// Reserve capacity, or give a reservation up: a commitment for the project, so its admin's.
    case manageLeases
    /// See the project's auto-scaling groups, their members and their timelines.
    case readGroups
    /// Create or delete a group, or set its desired count: it makes and removes guests, so the
    /// project's admin's.
    case manageGroups
    /// Choose how a guest may be moved off a host that is emptied (`MigrationPolicy`): whoever
    /// runs the project's guests, as they chose it at the create.
    case setMigrationPolicy

    /// The least role that may do it.
    public var minimumRole: ProjectRole {
        switch self {
        case .listGuests, .readGuest, .createGuest, .stopGuest, .startGuest, .deleteGuest, .readLeases, .readGroups,
            .setMigrationPolicy:
            .member
        case .readInvoice, .manageMembers, .manageLeases, .manageGroups: .admin
        }
    }
}

/// What is done to the site rather than to one project's resources.
public enum SiteAction: String, Sendable, Hashable, CaseIterable {
    /// List the flavors and images (what a member needs to create a guest).
    case readCatalogue
    case manageHosts
    case manageFlavors
    case manageImages
    case manageProjects
    case manageQuotas
    /// Move a guest to another host (a live migration): where guests run is the operator's
    /// concern, as the hosts are; a project's admin sees its guests' hosts but does not pick them.
    case migrateGuests

    public var needsSiteAdmin: Bool { self != .readCatalogue }
}

/// The answer to "may this principal do that": yes; no, and the thing must look absent (HTTP
/// 404: a resource of a project the principal is not in); no, and the principal may know why
/// (HTTP 403: a member asking for an admin's action in their own project, or anyone but a site
/// admin asking for a site admin's action).
public enum AccessDecision: Sendable, Hashable {
    case allow
    case notFound
    case forbidden
}

/// Who may do what: pure, from the principal's memberships alone. The caller looks the resource
/// up, finds its project, asks here, and answers `notFound` exactly as if there were no such
/// resource when told so.
public enum Authorization {
    public static func decide(_ principal: Principal, _ action: ProjectAction, project: String) -> AccessDecision {
        guard let role = principal.role(in: project) else { return .notFound }
        return role >= action.minimumRole ? .allow : .forbidden
    }

    public static func decide(_ principal: Principal, _ action: SiteAction) -> AccessDecision {
        !action.needsSiteAdmin || principal.siteAdmin ? .allow : .forbidden
    }

    /// Throws unless allowed: `notFound` with `notFoundMessage` (the very message the caller
    /// gives for a resource that does not exist, e.g. "no guest ID"), or `forbidden`.
    public static func require(
        _ principal: Principal, _ action: ProjectAction, project: String, notFoundMessage: String
    ) throws(ControlError) {
        switch decide(principal, action, project: project) {
        case .allow: return
        case .notFound: throw ControlError(.notFound, notFoundMessage)
        case .forbidden:
            throw ControlError(
                .forbidden,
                "user \(principal.user) is a member of project \(project); \(action.rawValue) needs its admin role:"
                    + " ask an admin of the project")
        }
    }

    public static func require(_ principal: Principal, _ action: SiteAction) throws(ControlError) {
        guard decide(principal, action) == .allow else {
            throw ControlError(
                .forbidden, "\(action.rawValue) needs a site admin; user \(principal.user) is not one")
        }
    }
}
