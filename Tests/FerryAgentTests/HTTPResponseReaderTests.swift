import Testing

@testable import FerryAgent

/// The client's HTTP/1.1 response reader and event-stream parser on bytes cut at every place.
struct HTTPResponseReaderTests {
    /// Hands out `bytes` in pieces of `step` bytes, as a socket may.
    struct Pieces: ByteSource {
        var bytes: [UInt8]
        var step: Int
        mutating func read(limit: Int) throws(AgentClientError) -> [UInt8] {
            let count = min(step, limit, bytes.count)
            defer { bytes.removeFirst(count) }
            return Array(bytes.prefix(count))
        }
    }

    func read(_ text: String, step: Int, maximumBodyBytes: Int = 1 << 20) throws -> (Int, String, [String]) {
        var reader = HTTPResponseReader(
            source: Pieces(bytes: Array(text.utf8), step: step), maximumBodyBytes: maximumBodyBytes)
        let head = try reader.readHead()
        let body = try reader.readBody(for: head)
        return (head.status, String(decoding: body, as: UTF8.self), head.headers.map { "\($0.name)=\($0.value)" })
    }

    @Test(arguments: [1, 2, 7, 4096])
    func contentLength(step: Int) throws {
        let (status, body, headers) = try read(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":1}\nextra", step: step
        )
        #expect(status == 200)
        #expect(body == "{\"a\":1}\n")
        #expect(headers == ["content-type=application/json", "content-length=8"])
    }

    @Test(arguments: [1, 3, 4096])
    func chunked(step: Int) throws {
        let text =
            "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        let (status, body, _) = try read(text, step: step)
        #expect(status == 201)
        #expect(body == "hello, world")
    }

    @Test func untilTheEndOfTheStream() throws {
        let (status, body, _) = try read("HTTP/1.0 404 Not Found\r\n\r\nno such thing", step: 5)
        #expect(status == 404)
        #expect(body == "no such thing")
    }

    @Test(arguments: [
        "", "SSH-2.0-OpenSSH_9.2\r\n\r\n", "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ])
    func brokenAnswersAreProtocolViolations(text: String) {
        #expect(throws: AgentClientError.self) { try read(text, step: 3, maximumBodyBytes: 1000) }
        do { _ = try read(text, step: 3, maximumBodyBytes: 1000) } catch let error as AgentClientError {
            #expect(error.code == .protocolViolation)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func eventStreamLinesSpanChunks() throws {
        let events = "id: 1\nevent: phase\ndata: {\"phase\":\"precopy\"}\n\n: comment\ndata: a\ndata: b\n\n"
        // Cut the stream into 4-byte chunks, so lines span chunk boundaries.
        var body = ""
        var rest = Substring(events)
        while !rest.isEmpty {
            let piece = rest.prefix(4)
            body += String(piece.utf8.count, radix: 16) + "\r\n" + String(piece) + "\r\n"
            rest = rest.dropFirst(4)
        }
        let text =
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            + "0\r\n\r\n"
        var reader = HTTPResponseReader(source: Pieces(bytes: Array(text.utf8), step: 5))
        let head = try reader.readHead()
        var lines = EventStreamLines(chunked: true)
        var parser = ServerSentEventParser()
        var seen: [ServerSentEvent] = []
        while let line = try lines.next(from: &reader) {
            if let event = parser.take(line: line) { seen.append(event) }
        }
        #expect(head.status == 200)
        #expect(
            seen == [
                ServerSentEvent(event: "phase", data: #"{"phase":"precopy"}"#, id: "1"),
                ServerSentEvent(event: "message", data: "a\nb", id: "1"),
            ])
    }

    @Test func anEventWritesAndParsesBack() {
        let event = ServerSentEvent(event: "round", data: "line one\nline two", id: "7")
        var parser = ServerSentEventParser()
        var parsed: [ServerSentEvent] = []
        for line in event.text.split(separator: "\n", omittingEmptySubsequences: false) {
            if let done = parser.take(line: String(line)) { parsed.append(done) }
        }
        #expect(parsed == [event])
    }
}
