import Foundation
import HTTPTypes
import Hummingbird

/// The one error every endpoint of the agent's API answers with: an HTTP status and the JSON body
/// `{"error": {"code": "...", "message": "...", "field": "..."}}` (`field` only when one field of
/// the request is to blame, spelled as the API spells it: `memory_bytes`, `disks[0].size_bytes`).
///
/// `code` is stable (clients may switch on it); `message` is for people and names the problem and
/// the fix.
public struct AgentAPIError: Error, Sendable, Equatable, HTTPResponseError {
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// 401: no `Authorization` header, or one that is not a Ferry credential.
        case missingCredentials = "missing_credentials"
        /// 401: a Ferry credential whose parts cannot be read.
        case malformedCredentials = "malformed_credentials"
        /// 401: signed with a key other than this agent's.
        case wrongKey = "wrong_key"
        /// 401: the signature does not match the request (altered, or signed for another request).
        case badSignature = "bad_signature"
        /// 401: the request's `Host` (covered by the signature) is not one of this agent's
        /// addresses: it was signed for another agent, or has no `Host` header.
        case wrongAudience = "wrong_audience"
        /// 401: `GET /metrics` with a bearer token that is not the agent's metrics token.
        case badToken = "bad_token"
        /// 401: the credential's time is outside the agent's freshness window.
        case staleCredentials = "stale_credentials"
        /// 401: the credential was used before (a replay).
        case replayedCredentials = "replayed_credentials"
        /// 400: the body is not JSON, or not the JSON object the endpoint takes.
        case malformedBody = "malformed_body"
        /// 422: the body is JSON but one field is missing, of the wrong type or out of range.
        case invalidField = "invalid_field"
        /// 404: no such resource or route.
        case notFound = "not_found"
        /// 405: the route exists but not with this method.
        case methodNotAllowed = "method_not_allowed"
        /// 409: the request cannot be done in the resource's present state (the message names
        /// the state and what to do), or it names something that exists already.
        case conflict
        /// 409: another operation on the same guest is running (the message names it); retry
        /// once it ended.
        case busy
        /// 409: an arriving guest's name or ID is taken on the destination.
        case nameClash = "name_clash"
        /// 409: the destination lacks the vCPUs or memory an arriving guest needs.
        case insufficientCapacity = "insufficient_capacity"
        /// 409: an incoming migration cannot be abandoned: its vmm has received bytes from the
        /// source, so only the migration's own end (completed, or ABORT) may stop it.
        case bytesReceived = "bytes_received"
        /// 409: a migration cannot be cancelled any more: its source wrote COMMIT (the guest
        /// belongs to the destination); it completes, or the handoff is resolved.
        case tooLate = "too_late"
        /// 413: the body is larger than the agent's limit.
        case bodyTooLarge = "body_too_large"
        /// 503: the agent cannot take the request now (it is stopping, or its replay cache is full).
        case unavailable
        /// 500: the agent failed; `message` says where.
        case internalError = "internal_error"
        /// Any other status a lower layer chose (e.g. 400 for a request the HTTP parser refused).
        case httpError = "http_error"
    }

    public var status: HTTPResponse.Status
    public var code: Code
    public var message: String
    public var field: String?

    public init(_ status: HTTPResponse.Status, _ code: Code, _ message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    /// 401 with `code` and the `WWW-Authenticate` challenge naming the scheme.
    public static func unauthenticated(_ code: Code, _ message: String) -> AgentAPIError {
        AgentAPIError(.unauthorized, code, message)
    }

    /// The JSON body's shape (also what the client decodes).
    public struct Body: Codable, Sendable, Equatable {
        public struct Detail: Codable, Sendable, Equatable {
            public var code: String
            public var message: String
            public var field: String?
        }
        public var error: Detail
    }

    public var body: Body { Body(error: .init(code: code.rawValue, message: message, field: field)) }

    // MARK: Response

    var headers: HTTPFields {
        var fields = HTTPFields()
        fields[.contentType] = "application/json; charset=utf-8"
        if status == .unauthorized { fields[.wwwAuthenticate] = RequestSignature.scheme }
        return fields
    }

    /// The JSON text of `body` and a newline.
    var bodyBytes: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(body)) ?? Data(#"{"error":{"code":"internal_error","message":"?"}}"#.utf8)
        return Array(data) + [0x0A]
    }

    /// The error as a response: status, JSON body, `WWW-Authenticate` on a 401.
    public func response() -> Response {
        var fields = headers
        let bytes = bodyBytes
        fields[.contentLength] = String(bytes.count)
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response { response() }

    /// Any error a handler or a lower layer threw, in this format: Hummingbird's own `HTTPError`s
    /// (no route, body too large, a parser's 400) keep their status; anything else is a 500 that
    /// names the error.
    public static func from(_ error: any Error) -> AgentAPIError {
        if let error = error as? AgentAPIError { return error }
        if let error = error as? HTTPError {
            switch error.status {
            case .notFound:
                return AgentAPIError(.notFound, .notFound, error.body ?? "no such route; see docs/agent-api.yaml")
            case .methodNotAllowed:
                return AgentAPIError(
                    .methodNotAllowed, .methodNotAllowed, error.body ?? "this route does not take that method")
            case .contentTooLarge:
                return AgentAPIError(.contentTooLarge, .bodyTooLarge, error.body ?? "the body is too large")
            default:
                return AgentAPIError(error.status, .httpError, error.body ?? error.status.reasonPhrase)
            }
        }
        return AgentAPIError(.internalServerError, .internalError, "the agent failed: \(error)")
    }
}
