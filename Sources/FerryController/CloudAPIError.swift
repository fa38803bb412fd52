import FerryAgent
import FerryControl
import Foundation
import HTTPTypes
import Hummingbird

/// The controller API's one error: an HTTP status and the JSON body the agent's API also uses,
/// `{"error": {"code": "...", "message": "..."}}`. `code` is stable; `message` names the problem
/// and the fix.
struct CloudAPIError: Error, Sendable, HTTPResponseError {
    var status: HTTPResponse.Status
    var code: String
    var message: String
    var field: String?
    /// Seconds for a `Retry-After` header (a throttled login).
    var retryAfterSeconds: Int?

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    /// The store's refusals as HTTP: what the client asked for does not exist (404), conflicts
    /// with what is (409), or exceeds what the project or the cluster has (409, 422).
    init(_ error: ControlError) {
        let status: HTTPResponse.Status =
            switch error.code {
            case .notFound: .notFound
            case .alreadyExists, .transitionRefused, .stale, .clientTokenMismatch, .quotaExceeded,
                .insufficientCapacity, .moveLimit:
                .conflict
            case .invalidArgument: .unprocessableContent
            case .unauthenticated, .wrongCredentials: .unauthorized
            case .forbidden: .forbidden
            case .throttled: .tooManyRequests
            case .unusableDatabase, .database: .serviceUnavailable
            }
        let code =
            switch error.code {
            case .notFound: "not_found"
            case .alreadyExists: "already_exists"
            case .invalidArgument: "invalid_field"
            case .transitionRefused: "conflict"
            case .stale: "stale"
            case .clientTokenMismatch: "client_token_mismatch"
            case .quotaExceeded: "quota_exceeded"
            case .insufficientCapacity: "insufficient_capacity"
            case .moveLimit: "move_limit"
            case .unauthenticated: "unauthenticated"
            case .wrongCredentials: "wrong_credentials"
            case .forbidden: "forbidden"
            case .throttled: "throttled"
            case .unusableDatabase, .database: "unavailable"
            }
        self.init(status, code, error.message)
        if let wait = error.retryAfter {
            retryAfterSeconds = max(1, Int(wait.components.seconds) + (wait.components.attoseconds > 0 ? 1 : 0))
        }
    }

    struct Detail: Codable {
        var code: String
        var message: String
        var field: String?
    }

    func response(from request: Request, context: some RequestContext) throws -> Response { response() }

    func response() -> Response {
        let body = ["error": Detail(code: code, message: message, field: field)]
        let bytes: [UInt8] = (try? JSONEncoder().encode(body)).map { Array($0) + [0x0A] } ?? []
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.contentLength] = String(bytes.count)
        if let retryAfterSeconds { headers[.retryAfter] = String(retryAfterSeconds) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Whatever a handler threw, in this format.
    static func from(_ error: any Error) -> CloudAPIError {
        if let error = error as? CloudAPIError { return error }
        if let error = error as? ControlError { return CloudAPIError(error) }
        let agent = AgentAPIError.from(error)
        if agent.code == .internalError {
            return CloudAPIError(.internalServerError, "internal_error", "the controller failed: \(error)")
        }
        return CloudAPIError(agent.status, agent.code.rawValue, agent.message, field: agent.field)
    }
}

/// Turns what a handler throws into `CloudAPIError`'s JSON; a 5xx is logged.
struct CloudErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let answer = CloudAPIError.from(error)
            if Self.isConsole(request.uri.path) {
                // The console's pages: no session → the login page; anything else → an HTML page.
                if answer.status == .unauthorized { return ConsoleHTML.redirect(ConsoleRoutes.loginPath) }
                return ConsoleHTML.error(answer, session: nil)
            }
            if answer.status.code >= 500 {
                context.logger.error(
                    "request failed",
                    metadata: [
                        "api.method": "\(request.method)", "api.path": "\(request.uri.path)",
                        "api.error": "\(answer.message)",
                    ])
            }
            return answer.response()
        }
    }

    static func isConsole(_ path: String) -> Bool { path == "/console" || path.hasPrefix("/console/") }
}
