import FerryTransport
import Foundation

/// Why a request to an agent failed: no connection, a broken answer, or the agent's own refusal
/// (`status` and `apiError` then say what the agent said).
public struct AgentClientError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The agent's URL cannot be used.
        case address
        /// No connection, or it broke (refused, timed out, reset).
        case connect
        /// The answer is not the HTTP the agent speaks.
        case protocolViolation
        /// 401: the agent did not accept the credential (another key, a clock far off).
        case unauthenticated
        /// Any other non-2xx answer.
        case refused
    }

    public var code: Code
    public var message: String
    public var status: Int?
    public var apiError: AgentAPIError.Body.Detail?

    public init(_ code: Code, _ message: String, status: Int? = nil, apiError: AgentAPIError.Body.Detail? = nil) {
        self.code = code
        self.message = message
        self.status = status
        self.apiError = apiError
    }

    public var description: String { message }
}

/// An answer from an agent.
public struct AgentResponse: Sendable {
    public var status: Int
    /// Names in lower case, in order.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public func header(_ name: String) -> String? {
        headers.first(where: { $0.name == name.lowercased() })?.value
    }
}

/// A client of the agent's API (docs/agent-api.yaml) for the CLI and for agents talking to each
/// other: HTTP/1.1 over the repository's own TCP layer, one connection per request, every request
/// signed (`RequestSignature`). Calls block the calling thread (at most `timeoutMs` without
/// progress); run them off a cooperative thread in async code.
public struct AgentClient: Sendable {
    /// The agent, `http://HOST:PORT` (a port alone means 127.0.0.1).
    public let endpoint: Endpoint
    let signature: RequestSignature?
    /// Sent as `Authorization: Bearer` instead of a signature (a controller's API token).
    let bearer: String?
    public var timeoutMs: Int

    /// `url` is `http://HOST:PORT`, `HOST:PORT` or a port; `key` nil sends unsigned requests
    /// (only `GET /healthz` answers those).
    public init(url: String, key: SharedKey?, timeoutMs: Int = 10_000) throws(AgentClientError) {
        endpoint = try Self.parse(url)
        signature = key.map(RequestSignature.init(key:))
        bearer = nil
        self.timeoutMs = timeoutMs
    }

    /// A client that presents an API token (`ferry control`'s users) instead of the cluster key.
    public init(url: String, bearer: String, timeoutMs: Int = 10_000) throws(AgentClientError) {
        endpoint = try Self.parse(url)
        signature = nil
        self.bearer = bearer
        self.timeoutMs = timeoutMs
    }

    static func parse(_ url: String) throws(AgentClientError) -> Endpoint {
        var rest = Substring(url)
        if rest.hasPrefix("https://") {
            throw AgentClientError(
                .address, "\(url): the agent speaks plain HTTP (http://HOST:PORT); TLS is not there yet")
        }
        if rest.hasPrefix("http://") { rest = rest.dropFirst("http://".count) }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/") else {
            throw AgentClientError(.address, "\(url): give the agent as http://HOST:PORT, without a path")
        }
        do throws(TransportError) {
            return try Endpoint.parse(String(rest), defaultHost: "127.0.0.1")
        } catch {
            throw AgentClientError(.address, "the agent's address \(error.message)")
        }
    }

    /// Sends one request and reads the whole answer (whatever its status).
    /// `headers` are sent as given (names and values without line breaks).
    public func send(_ method: String, _ target: String, body: [UInt8] = [], headers: [(String, String)] = [])
        throws(AgentClientError) -> AgentResponse
    {
        let extra = headers.filter { !($0.0 + $0.1).contains(where: \.isNewline) }.map { "\($0.0): \($0.1)\r\n" }
        var reader = try open(method, target, body: body, accept: "application/json", extraHeaders: extra.joined())
        let head = try reader.readHead()
        return AgentResponse(status: head.status, headers: head.headers, body: try reader.readBody(for: head))
    }

    /// `GET` a JSON resource; a non-2xx answer throws with the agent's error.
    public func get<Value: Decodable>(_ target: String, as type: Value.Type) throws(AgentClientError) -> Value {
        try decode(Value.self, from: try checked(send("GET", target)), target: target)
    }

    /// Sends a JSON body and decodes the JSON answer; a non-2xx answer throws with the agent's error.
    public func call<Value: Decodable>(
        _ method: String, _ target: String, json body: some Encodable, as type: Value.Type
    ) throws(AgentClientError) -> Value {
        let bytes: [UInt8]
        do { bytes = Array(try JSONEncoder().encode(body)) } catch {
            throw AgentClientError(.protocolViolation, "cannot encode the request: \(error)")
        }
        return try decode(Value.self, from: try checked(send(method, target, body: bytes)), target: target)
    }

    /// Reads a `text/event-stream` at `target`, calling `onEvent` for each event until it
    /// returns false or the agent ends the stream. Waits for events without a timeout.
    /// `lastEventID` resumes after that event (`Last-Event-ID`).
    public func events(_ target: String, lastEventID: UInt64? = nil, onEvent: (ServerSentEvent) -> Bool)
        throws(AgentClientError)
    {
        var reader = try open(
            "GET", target, body: [], accept: "text/event-stream", waitForever: true,
            extraHeaders: lastEventID.map { "Last-Event-ID: \($0)\r\n" } ?? "")
        let head = try reader.readHead()
        guard (200..<300).contains(head.status) else {
            _ = try checked(
                AgentResponse(status: head.status, headers: head.headers, body: try reader.readBody(for: head)))
            return
        }
        var parser = ServerSentEventParser()
        var lines = EventStreamLines(chunked: head.header("transfer-encoding")?.contains("chunked") == true)
        while let line = try lines.next(from: &reader) {
            if let event = parser.take(line: line), !onEvent(event) { return }
        }
    }

    // MARK: Plumbing

    private func open(
        _ method: String, _ target: String, body: [UInt8], accept: String, waitForever: Bool = false,
        extraHeaders: String = ""
    ) throws(AgentClientError) -> HTTPResponseReader<SocketSource> {
        let stream: TCPStream
        do throws(TransportError) {
            stream = try TCPStream.connect(endpoint, timeoutMs: timeoutMs)
            try stream.setReceiveTimeout(ms: waitForever ? nil : timeoutMs)
            try stream.setSendTimeout(ms: timeoutMs)
        } catch {
            throw AgentClientError(.connect, "cannot reach the agent at http://\(endpoint): \(error.message)")
        }
        // The signature covers Host: the agent addressed, so that no other agent accepts it.
        let host = endpoint.description
        var head =
            "\(method) \(target) HTTP/1.1\r\nHost: \(host)\r\nAccept: \(accept)\r\nConnection: close\r\n"
            + extraHeaders
        if let signature {
            head +=
                "Authorization: \(signature.authorization(method: method, host: host, target: target, body: body))\r\n"
        } else if let bearer {
            head += "Authorization: Bearer \(bearer)\r\n"
        }
        if !body.isEmpty || method == "POST" || method == "PUT" || method == "PATCH" {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        }
        let bytes = Array((head + "\r\n").utf8) + body
        do {
            try bytes.withUnsafeBytes { try stream.writeAll($0) }
        } catch {
            let message = (error as? TransportError)?.message ?? "\(error)"
            throw AgentClientError(.connect, "sending to the agent at http://\(endpoint) failed: \(message)")
        }
        return HTTPResponseReader(source: SocketSource(stream: stream, endpoint: endpoint))
    }

    /// The response when it is a 2xx, else the agent's error as thrown.
    public func checked(_ response: AgentResponse) throws(AgentClientError) -> AgentResponse {
        guard !(200..<300).contains(response.status) else { return response }
        let detail = (try? JSONDecoder().decode(AgentAPIError.Body.self, from: Data(response.body)))?.error
        let said =
            detail.map { "\($0.message) (\($0.code))" } ?? String(decoding: response.body.prefix(200), as: UTF8.self)
        let code: AgentClientError.Code = response.status == 401 ? .unauthenticated : .refused
        throw AgentClientError(
            code, "the agent at http://\(endpoint) answered \(response.status): \(said)", status: response.status,
            apiError: detail)
    }

    private func decode<Value: Decodable>(_ type: Value.Type, from response: AgentResponse, target: String)
        throws(AgentClientError) -> Value
    {
        do {
            return try JSONDecoder().decode(Value.self, from: Data(response.body))
        } catch {
            throw AgentClientError(
                .protocolViolation, "the agent's answer to \(target) is not the JSON expected: \(error)",
                status: response.status)
        }
    }
}

/// A connected socket as a `ByteSource`.
struct SocketSource: ByteSource {
    let stream: TCPStream
    let endpoint: Endpoint

    mutating func read(limit: Int) throws(AgentClientError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: limit)
        let count: Int
        do {
            count = try bytes.withUnsafeMutableBytes { try stream.readAvailable(into: $0) }
        } catch {
            let message = (error as? TransportError)?.message ?? "\(error)"
            throw AgentClientError(.connect, "reading from the agent at http://\(endpoint) failed: \(message)")
        }
        bytes.removeLast(limit - count)
        return bytes
    }
}

/// The lines of an event stream's body, chunked or not (a line may span chunks).
struct EventStreamLines {
    let chunked: Bool
    private var pending: [UInt8] = []
    private var finished = false

    init(chunked: Bool) { self.chunked = chunked }

    mutating func next<Source>(from reader: inout HTTPResponseReader<Source>) throws(AgentClientError) -> String? {
        guard chunked else { return try reader.readLine(limit: 1 << 20) }
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                var line = Array(pending[..<newline])
                pending.removeFirst(newline + 1)
                if line.last == 0x0D { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            if finished { return nil }
            guard let chunk = try reader.readChunk() else {
                finished = true
                continue
            }
            pending += chunk
            guard pending.count <= 1 << 20 else {
                throw AgentClientError(.protocolViolation, "an event stream line longer than 1 MiB")
            }
        }
    }
}
