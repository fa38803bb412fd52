import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Times every request, from its arrival to its response's head being ready, and records it by
/// route pattern, method and status (`AgentMetrics`); the outermost middleware, so it sees the
/// status the client gets, 401s and 404s included.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: AgentMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let start = ContinuousClock.now
        let method = request.method.rawValue
        let response = try await next(request, context)
        // Hummingbird names a request no route matched "NotFound"; a refused one has no route yet.
        let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? "unmatched"
        metrics.recordRequest(
            route: route, method: method, status: Int(response.status.code),
            duration: ContinuousClock.now - start)
        return response
    }
}

/// Turns whatever a handler or an inner middleware throws into the API's JSON error
/// (`AgentAPIError`); a 5xx is logged with the request.
struct ErrorResponseMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let answer = AgentAPIError.from(error)
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
}

/// Reads the body (at most `bodyLimitBytes`: 413 beyond) and checks the request's credential
/// (`RequestVerifier`) before anything else sees it; `GET /healthz` alone goes through without
/// one, and `GET /metrics` also takes the metrics token (`MetricsToken`) when the agent has one.
/// The body read here is the one handlers get, so what was verified is what is used.
public struct AuthenticationMiddleware<Context: RequestContext>: RouterMiddleware {
    let verifier: RequestVerifier
    let bodyLimitBytes: Int
    var metricsToken: MetricsToken? = nil
    static var openPaths: Set<String> { ["/healthz"] }
    static var metricsPath: String { "/metrics" }

    public init(verifier: RequestVerifier, bodyLimitBytes: Int, metricsToken: MetricsToken? = nil) {
        self.verifier = verifier
        self.bodyLimitBytes = bodyLimitBytes
        self.metricsToken = metricsToken
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if request.method == .get && Self.openPaths.contains(request.uri.path) {
            return try await next(request, context)
        }
        if let metricsToken, let presented = MetricsToken.presented(in: request.headers[.authorization]) {
            try checkBearer(presented, token: metricsToken, request: request)
            return try await next(request, context)
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > bodyLimitBytes {
            throw AgentAPIError(
                .contentTooLarge, .bodyTooLarge,
                "the body has \(length) bytes; this agent takes at most \(bodyLimitBytes)")
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: bodyLimitBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw AgentAPIError(
                .contentTooLarge, .bodyTooLarge, "the body is larger than this agent's limit of \(bodyLimitBytes) bytes"
            )
        }
        try verifier.verify(
            authorization: request.headers[.authorization], method: request.method.rawValue,
            host: Self.host(of: request), target: request.head.path ?? "/", body: body.readableBytesView)
        return try await next(request, context)
    }

    /// The request's one `Host` header; nil without one, "" when it has more than one (HTTP's
    /// parser keeps the first as the authority and any other among the fields).
    public static func host(of request: Request) -> String? {
        guard let authority = request.head.authority else { return nil }
        return request.headers[values: HTTPField.Name("Host")!].isEmpty ? authority : ""
    }

    /// A bearer token reads `GET /metrics` only; anywhere else it is no credential at all.
    private func checkBearer(_ presented: Substring, token: MetricsToken, request: Request) throws(AgentAPIError) {
        guard request.method == .get, request.uri.path == Self.metricsPath else {
            throw .unauthenticated(
                .missingCredentials,
                "a bearer token reads GET \(Self.metricsPath) only; sign this request with the shared key (\(RequestSignature.scheme))"
            )
        }
        guard token.matches(presented) else {
            throw .unauthenticated(
                .badToken,
                "the bearer token is not this agent's metrics token: use the contents of the agent's --metrics-token-file"
            )
        }
    }
}
