import FerryControl
import Foundation

/// Where the control store's PostgreSQL database is, as `postgres://user:password@host:port/database`
/// (libpq's URI form; `postgresql://` too). The port defaults to 5432, the database to the user's
/// name. Of the query parameters only `sslmode` is read: `disable`, `prefer` (the default, as
/// libpq's) or `require`. User and password may be percent-encoded.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable
        case prefer
        case require
    }

    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    public var sslMode: SSLMode

    public init(
        user: String, password: String?, host: String, port: Int = 5432, database: String, sslMode: SSLMode = .prefer
    ) {
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.database = database
        self.sslMode = sslMode
    }

    /// Parses `text`; a URL that is not of that form is refused with `invalidArgument`, naming it
    /// without its password.
    public init(_ text: String) throws(ControlError) {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
            ["postgres", "postgresql"].contains(scheme.lowercased())
        else {
            throw Self.refusal(text, "is not a URL of the form postgres://user:password@host:port/database")
        }
        guard let host = components.host, !host.isEmpty else { throw Self.refusal(text, "names no host") }
        guard let user = components.user.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw Self.refusal(text, "names no user (postgres://user@host/database)")
        }
        let database = String(components.path.drop(while: { $0 == "/" })).removingPercentEncoding ?? ""
        guard !database.contains("/") else { throw Self.refusal(text, "has a path that is not one database name") }
        var sslMode = SSLMode.prefer
        for item in components.queryItems ?? [] {
            guard item.name == "sslmode" else {
                throw Self.refusal(text, "has the parameter \(item.name), which Ferry does not read (only sslmode)")
            }
            guard let mode = item.value.flatMap(SSLMode.init(rawValue:)) else {
                let modes = SSLMode.allCases.map(\.rawValue).joined(separator: ", ")
                throw Self.refusal(text, "has sslmode=\(item.value ?? ""); Ferry knows \(modes)")
            }
            sslMode = mode
        }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw Self.refusal(text, "has port \(port)") }
        self.init(
            user: user, password: components.password.map { $0.removingPercentEncoding ?? $0 },
            host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port,
            database: database.isEmpty ? user : database, sslMode: sslMode)
    }

    /// The URL without its password, for messages and logs.
    public var description: String {
        let hostText = host.contains(":") ? "[\(host)]" : host
        let query = sslMode == .prefer ? "" : "?sslmode=\(sslMode.rawValue)"
        return "postgres://\(user)@\(hostText):\(port)/\(database)\(query)"
    }

    /// The URL with its password, for connecting (never logged).
    public var withPassword: String {
        var components = URLComponents()
        components.scheme = "postgres"
        components.user = user
        components.password = password
        components.host = host.contains(":") ? "[\(host)]" : host
        components.port = port
        components.path = "/" + database
        if sslMode != .prefer { components.queryItems = [URLQueryItem(name: "sslmode", value: sslMode.rawValue)] }
        return components.string ?? description
    }

    /// The same server and user, another database (the tests' maintenance connection makes and
    /// drops databases through `postgres`).
    public func database(_ name: String) -> PostgresURL {
        var url = self
        url.database = name
        return url
    }

    private static func refusal(_ text: String, _ problem: String) -> ControlError {
        ControlError(.invalidArgument, "database URL \(redacted(text)) \(problem)")
    }

    /// `text` with whatever stands between `user:` and `@` replaced by `***`.
    static func redacted(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://"), let at = text.range(of: "@", options: .backwards),
            schemeEnd.upperBound <= at.lowerBound,
            let colon = text[schemeEnd.upperBound..<at.lowerBound].firstIndex(of: ":")
        else { return text }
        return String(text[..<text.index(after: colon)]) + "***" + String(text[at.lowerBound...])
    }
}
