import Foundation

/// Where the client's bytes come from: a socket (`TCPStream`) or, in tests, an array.
protocol ByteSource {
    /// Up to `limit` bytes that have arrived (waiting for one); empty at the end of the stream.
    mutating func read(limit: Int) throws(AgentClientError) -> [UInt8]
}

/// Reads an HTTP/1.1 response from a `ByteSource`: the status line and headers, then a body
/// framed by `Content-Length`, by chunked transfer coding, or by the end of the stream. Every
/// length is bounded before it is believed.
struct HTTPResponseReader<Source: ByteSource> {
    struct Head: Equatable {
        var status: Int
        var reason: String
        /// Header names in lower case, in the order they came.
        var headers: [(name: String, value: String)]

        func header(_ name: String) -> String? {
            headers.first(where: { $0.name == name.lowercased() })?.value
        }

        static func == (lhs: Head, rhs: Head) -> Bool {
            lhs.status == rhs.status && lhs.reason == rhs.reason
                && lhs.headers.map { [$0.name, $0.value] } == rhs.headers.map { [$0.name, $0.value] }
        }
    }

    static var maximumHeadBytes: Int { 64 << 10 }

    private var source: Source
    private var buffer: [UInt8] = []
    private var position = 0
    private var ended = false
    let maximumBodyBytes: Int

    init(source: Source, maximumBodyBytes: Int = 64 << 20) {
        self.source = source
        self.maximumBodyBytes = maximumBodyBytes
    }

    // MARK: Bytes

    /// Makes at least one unread byte available; false at the end of the stream.
    private mutating func fill() throws(AgentClientError) -> Bool {
        if position < buffer.count { return true }
        if ended { return false }
        buffer = try source.read(limit: 16 << 10)
        position = 0
        if buffer.isEmpty { ended = true }
        return !buffer.isEmpty
    }

    /// One line without its CRLF (or LF); nil at the end of the stream before any byte.
    mutating func readLine(limit: Int) throws(AgentClientError) -> String? {
        var line: [UInt8] = []
        while try fill() {
            let byte = buffer[position]
            position += 1
            if byte == 0x0A {
                if line.last == 0x0D { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            line.append(byte)
            guard line.count <= limit else {
                throw AgentClientError(.protocolViolation, "the agent sent a line longer than \(limit) bytes")
            }
        }
        if line.isEmpty { return nil }
        throw AgentClientError(.protocolViolation, "the connection ended in the middle of a line")
    }

    mutating func readExactly(_ count: Int) throws(AgentClientError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            guard try fill() else {
                throw AgentClientError(
                    .protocolViolation, "the connection ended after \(out.count) of \(count) body bytes")
            }
            let take = min(count - out.count, buffer.count - position)
            out.append(contentsOf: buffer[position..<position + take])
            position += take
        }
        return out
    }

    // MARK: HTTP

    mutating func readHead() throws(AgentClientError) -> Head {
        var total = 0
        guard let statusLine = try readLine(limit: 1024) else {
            throw AgentClientError(.protocolViolation, "the agent closed the connection without answering")
        }
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100...599).contains(status)
        else {
            throw AgentClientError(
                .protocolViolation,
                "not an HTTP/1.1 status line: '\(statusLine.prefix(80))' (is this an agent's address?)")
        }
        var head = Head(status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: [])
        while let line = try readLine(limit: 8192), !line.isEmpty {
            total += line.utf8.count
            guard total <= Self.maximumHeadBytes, let colon = line.firstIndex(of: ":") else {
                throw AgentClientError(.protocolViolation, "a malformed or oversized header: '\(line.prefix(80))'")
            }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: [" ", "\t"])
            head.headers.append((name, value))
        }
        return head
    }

    /// The whole body the head announces.
    mutating func readBody(for head: Head) throws(AgentClientError) -> [UInt8] {
        if head.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            var body: [UInt8] = []
            while let chunk = try readChunk() { body += chunk }
            return body
        }
        if let text = head.header("content-length") {
            guard let length = Int(text), length >= 0 else {
                throw AgentClientError(.protocolViolation, "Content-Length '\(text)' is not a length")
            }
            guard length <= maximumBodyBytes else {
                throw AgentClientError(
                    .protocolViolation,
                    "the body has \(length) bytes, more than this client takes (\(maximumBodyBytes))")
            }
            return try readExactly(length)
        }
        var body: [UInt8] = []
        while try fill() {
            body.append(contentsOf: buffer[position...])
            position = buffer.count
            guard body.count <= maximumBodyBytes else {
                throw AgentClientError(
                    .protocolViolation, "the body is longer than this client takes (\(maximumBodyBytes))")
            }
        }
        return body
    }

    /// The next chunk of a chunked body, nil after the last (its trailers read and dropped).
    mutating func readChunk() throws(AgentClientError) -> [UInt8]? {
        guard let line = try readLine(limit: 1024) else {
            throw AgentClientError(.protocolViolation, "the connection ended before the chunked body's end")
        }
        let sizeText = line.split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
        guard let size = Int(sizeText.trimmingCharacters(in: [" "]), radix: 16), size >= 0, size <= maximumBodyBytes
        else {
            throw AgentClientError(
                .protocolViolation, "chunk size '\(line.prefix(40))' is not a hex length within bounds")
        }
        if size == 0 {
            while let trailer = try readLine(limit: 8192), !trailer.isEmpty {}
            return nil
        }
        let chunk = try readExactly(size)
        guard try readLine(limit: 2) == "" else {
            throw AgentClientError(.protocolViolation, "a chunk does not end with CRLF")
        }
        return chunk
    }
}
