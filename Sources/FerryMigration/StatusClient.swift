import FerryProtocol
import FerrySystem
import FerryTransport

/// Asks a destination agent where migrations stand (`STATUS_QUERY` → `STATUS` frames,
/// Protocol.md 3.19–3.20): what `ferry status` prints, and how a source whose last
/// acknowledgement was lost learns the outcome of its handoff.
public enum StatusClient {
    /// Connects to `endpoint`, sends `query` and reads every `STATUS` of the answer. The
    /// connection is returned open: after an `awaiting-commit` answer to a resolve query it
    /// carries the source's `COMMIT` or `ABORT`. The caller closes it.
    public static func ask(
        _ endpoint: Endpoint, _ query: StatusQuery, security: ConnectionSecurity = .none,
        connectTimeout: Duration = .seconds(2),
        replyTimeout: Duration = .seconds(5)
    ) throws(TransportError) -> (connection: FramedConnection, answers: [Status]) {
        let stream = try TCPStream.connect(endpoint, timeoutMs: connectTimeout.inMilliseconds)
        try stream.setReceiveTimeout(ms: replyTimeout.inMilliseconds)
        let connection = FramedConnection(stream)
        do throws(TransportError) {
            // A destination with a key authenticates every connection, status queries included.
            try connection.authenticate(asClient: security)
            try connection.send(query)
            var answers: [Status] = []
            repeat {
                let frame = try connection.receive()
                if frame.type == .refuse, let refusal = try? Refuse(payload: frame.payload) {
                    throw TransportError(
                        .unauthenticated, "\(endpoint) refused the status query (\(refusal.reason)): \(refusal.message)"
                    )
                }
                guard frame.type == .status else {
                    throw TransportError(.protocolViolation, "expected STATUS from \(endpoint), got \(frame.type)")
                }
                let status: Status
                do {
                    status = try Status(payload: frame.payload)
                } catch {
                    throw TransportError(
                        .protocolViolation, "malformed STATUS from \(endpoint): \(error.message)", protocolError: error)
                }
                guard Int(status.index) == answers.count, answers.isEmpty || status.total == answers[0].total else {
                    throw TransportError(
                        .protocolViolation,
                        "STATUS \(status.index) of \(status.total) out of order (expected \(answers.count))")
                }
                answers.append(status)
            } while answers.count < Int(answers[0].total)
            return (connection, answers)
        } catch {
            connection.close()
            throw error
        }
    }
}
