import FerryProtocol
import FerryTransport
import Glibc

/// A pthread whose result the test joins; blocking socket work stays off the cooperative pool.
final class JoinableThread<Value>: @unchecked Sendable {
    // Safe: immutable after init except `joined`, which only the joining thread touches.
    private let thread: pthread_t
    private var joined = false

    init(_ body: @escaping @Sendable () throws -> Value) {
        let box = ResultBox<Value>()
        self.thread = startThread {
            do { box.result = .success(try body()) } catch { box.result = .failure(error) }
        }
        self.box = box
    }

    private let box: ResultBox<Value>

    func join() throws -> Value {
        precondition(!joined)
        joined = true
        pthread_join(thread, nil)
        return try box.result!.get()
    }
}

/// Safe: written by one thread before it exits, read after pthread_join.
final class ResultBox<Value>: @unchecked Sendable {
    var result: Result<Value, any Error>?
}

private final class ThreadBody {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

/// Starts a pthread running `body`.
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    var thread = pthread_t()
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    let rc = pthread_create(
        &thread, nil,
        { raw in
            Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
    precondition(rc == 0, "pthread_create: \(rc)")
    return thread
}

let loopback = Endpoint(host: "127.0.0.1", port: 0)

/// A connected client/server pair on loopback. Reads time out after 5 s, so a broken
/// implementation fails a test instead of hanging the run.
func loopbackPair() throws -> (client: TCPStream, server: TCPStream) {
    let listener = try TCPListener(loopback)
    let client = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
    let server = try listener.accept(timeoutMs: 2000)
    try client.setReceiveTimeout(ms: 5000)
    try server.setReceiveTimeout(ms: 5000)
    return (client, server)
}

/// Writes a raw frame header (and optional payload bytes) straight to a stream.
func writeRawFrame(
    _ stream: TCPStream, type: UInt16, flags: UInt16 = 0, length: UInt32, sequence: UInt64, payload: [UInt8] = []
) throws {
    let header = FrameHeader(type: type, flags: flags, length: length, sequence: sequence).bytes
    try header.withUnsafeBytes { h in
        try payload.withUnsafeBytes { p in try stream.writeAll(h, p) }
    }
}

/// Test-only message: a ROUND_ACK-typed frame carrying one u32.
struct TestAck: FrameMessage, Equatable {
    static let frameType = FrameType.roundAck
    var round: UInt32

    init(round: UInt32) { self.round = round }

    func encode(into out: inout [UInt8]) {
        withUnsafeBytes(of: round.littleEndian) { out += $0 }
    }

    init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        guard payload.count == 4 else {
            throw ProtocolError(.truncated, "test ack needs 4 bytes, got \(payload.count)")
        }
        round = UInt32(littleEndian: payload.loadUnaligned(as: UInt32.self))
    }
}

/// Test-only message: an opaque PAGE_BATCH-typed blob.
struct TestBlob: FrameMessage, Equatable {
    static let frameType = FrameType.pageBatch
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func encode(into out: inout [UInt8]) { out += bytes }

    init(payload: UnsafeRawBufferPointer) throws(ProtocolError) { bytes = Array(payload) }
}

/// An ABORT payload per Protocol.md 3.13.
func abortPayload(reason: UInt16, message: String) -> [UInt8] {
    var out: [UInt8] = []
    withUnsafeBytes(of: reason.littleEndian) { out += $0 }
    out += [0, 0]
    let text = Array(message.utf8)
    withUnsafeBytes(of: UInt16(text.count).littleEndian) { out += $0 }
    return out + text
}

/// Runs `body` and returns the TransportError it throws (nil if it threw nothing).
func transportError(_ body: () throws -> Void) -> TransportError? {
    do {
        try body()
        return nil
    } catch let error as TransportError {
        return error
    } catch {
        return TransportError(.io, "unexpected error type: \(error)")
    }
}

func milliseconds(since start: Int) -> Int {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int(now.tv_sec) * 1000 + Int(now.tv_nsec) / 1_000_000 - start
}

func nowMilliseconds() -> Int { milliseconds(since: 0) }
