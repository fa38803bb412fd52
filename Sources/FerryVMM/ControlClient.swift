import FerrySystem
import Foundation

/// A client of one `ferry vmm`'s control socket (an agent, the tests): sends a request, reads its
/// response. A process that is gone is `.stale` (nothing listens) or `.disconnected` (the
/// connection broke mid-request), never a hang.
public final class VMMControlClient: @unchecked Sendable {
    public let path: String
    let connection: UnixLineConnection
    private var nextID = 1

    public init(path: String, timeoutSeconds: Double = 30) throws(VMMError) {
        self.path = path
        connection = try UnixLineConnection.connect(path: path)
        connection.setReceiveTimeout(seconds: timeoutSeconds)
    }

    /// Sends `{"op": op, …fields}` and returns the response's `result`; an error response throws
    /// `.refused` with the process's code, field and message.
    @discardableResult
    public func call(_ op: String, _ fields: [String: JSONValue] = [:]) throws(VMMError) -> JSONValue {
        var request = fields
        request["op"] = .string(op)
        request["id"] = JSONValue(nextID)
        nextID += 1
        let response = try send(line: JSONValue.object(request).line)
        if response["ok"]?.boolValue == true { return response["result"] ?? .null }
        let error = response["error"]
        let field = error?["field"]?.stringValue.map { " (field \($0))" } ?? ""
        throw VMMError(
            .refused,
            "\(op): \(error?["code"]?.stringValue ?? "error")\(field): \(error?["message"]?.stringValue ?? response.line)"
        )
    }

    /// Sends one raw line and returns the response line parsed.
    public func send(line: String) throws(VMMError) -> JSONValue {
        guard connection.writeLine(line) else {
            throw VMMError(
                .disconnected, "the ferry vmm at \(path) closed the connection; ask hello to see whether it still runs")
        }
        return try next()
    }

    /// The next line from the process (a response, or an event after `watch`).
    public func next() throws(VMMError) -> JSONValue {
        switch connection.readLine(maxLineBytes: 16 << 20) {
        case .line(let line):
            do { return try JSONValue.parse(line) } catch {
                throw VMMError(.refused, "the ferry vmm at \(path) sent a line that is not JSON: \(line.prefix(200))")
            }
        case .tooLong:
            throw VMMError(.refused, "the ferry vmm at \(path) sent a line over 16 MiB")
        case .closed:
            throw VMMError(
                .disconnected,
                "the ferry vmm at \(path) closed the connection before answering (it exited or was killed, or the wait timed out)"
            )
        }
    }

    /// How long a read waits for the process (0: without limit, as a `watch` connection does).
    public func setReceiveTimeout(seconds: Double) { connection.setReceiveTimeout(seconds: seconds) }

    public func close() { connection.shutdownBoth() }
}
