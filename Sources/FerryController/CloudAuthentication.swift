import FerryAgent
import FerryControl
import Foundation
import HTTPTypes
import Hummingbird

/// Who is asking, for every route but `/healthz` and the login: a request signed with the
/// cluster key (agents, the operator's tools), a user's API token (`Authorization: Bearer`), or a
/// user's session cookie. A session's changes (any method but GET and HEAD) must carry the
/// session's CSRF token, in the `X-CSRF-Token` header or a form's `csrf_token` field: a page of
/// another site can make the browser send the cookie but cannot read the token. The body is
/// read here, within the limit, for the signature and the form.
struct CloudAuthenticationMiddleware: RouterMiddleware {
    typealias Context = ControllerContext
    let verifier: RequestVerifier
    let accounts: AccountService
    let bodyLimitBytes: Int

    static let sessionCookie = "ferry_session"
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
    static let csrfField = "csrf_token"
    /// Answered without credentials.
    static let openPaths: Set<String> = ["/healthz", "/v1/login", ConsoleRoutes.loginPath]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        var request = request
        var context = context
        let body = try await collectBody(&request)
        if Self.openPaths.contains(request.uri.path) { return try await next(request, context) }
        let authorization = request.headers[.authorization]
        if let authorization, authorization.hasPrefix(RequestSignature.scheme + " ") {
            try verifier.verify(
                authorization: authorization, method: request.method.rawValue,
                host: AuthenticationMiddleware<Context>.host(of: request), target: request.head.path ?? "/",
                body: body.readableBytesView)
            context.caller = .cluster
        } else if let authorization {
            context.caller = .token(try await principal(bearer: authorization))
        } else if let token = request.cookies[Self.sessionCookie]?.value {
            guard let session = try await accounts.session(token: token, now: Date()) else {
                throw CloudAPIError(
                    .unauthorized, "unauthenticated", "the session has expired or ended: log in again")
            }
            if ![.get, .head].contains(request.method) {
                let submitted = request.headers[Self.csrfHeader] ?? Self.formField(Self.csrfField, in: request, body)
                guard let submitted, session.accepts(csrfToken: submitted) else {
                    throw CloudAPIError(
                        .forbidden, "csrf",
                        "a change made with a session cookie must carry the session's CSRF token (the X-CSRF-Token header or the form's csrf_token field): reload the page"
                    )
                }
            }
            context.caller = .session(session, token: token)
        } else {
            throw CloudAPIError.unauthenticated
        }
        return try await next(request, context)
    }

    private func principal(bearer authorization: String) async throws -> Principal {
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw CloudAPIError(
                .unauthorized, "unauthenticated",
                "unknown Authorization scheme \(parts.first ?? ""): send `Bearer TOKEN` (an API token) or sign with the cluster key (\(RequestSignature.scheme))"
            )
        }
        guard let principal = try await accounts.apiToken(secret: String(parts[1]), now: Date()) else {
            throw CloudAPIError(
                .unauthorized, "unauthenticated",
                "the API token is unknown or revoked: make a new one (POST /v1/tokens)")
        }
        return principal
    }

    private func collectBody(_ request: inout Request) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > bodyLimitBytes {
            throw CloudAPIError(
                .contentTooLarge, "body_too_large",
                "the body has \(length) bytes; the controller takes at most \(bodyLimitBytes)")
        }
        do {
            return try await request.collectBody(upTo: bodyLimitBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw CloudAPIError(
                .contentTooLarge, "body_too_large",
                "the body is larger than the controller's limit of \(bodyLimitBytes) bytes")
        }
    }

    /// A field of an `application/x-www-form-urlencoded` body (a console form).
    static func formField(_ name: String, in request: Request, _ body: ByteBuffer) -> String? {
        guard request.headers[.contentType]?.hasPrefix("application/x-www-form-urlencoded") == true else { return nil }
        return FormFields(String(buffer: body))[name]
    }
}

/// The fields of a URL-encoded form (`a=1&b=x+y`); a repeated name keeps its first value.
struct FormFields: Sendable {
    let fields: [String: String]

    init(_ text: String) {
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (raw: Substring) in
                String(raw).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(raw)
            }
            let key = decode(parts[0])
            if fields[key] == nil { fields[key] = parts.count > 1 ? decode(parts[1]) : "" }
        }
        self.fields = fields
    }

    subscript(name: String) -> String? { fields[name] }
}
