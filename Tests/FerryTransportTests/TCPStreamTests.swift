import FerryTransport
import Glibc
import Testing

@Suite struct TCPStreamTests {
    @Test func listenerOnPortZeroReportsTheBoundPort() throws {
        let listener = try TCPListener(loopback)
        #expect(listener.port != 0)
        let client = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
        let server = try listener.accept(timeoutMs: 2000)
        #expect(client.peerDescription == "127.0.0.1:\(listener.port)")
        #expect(server.peerDescription.hasPrefix("127.0.0.1:"))

        let message: [UInt8] = Array("hello over loopback".utf8)
        try message.withUnsafeBytes { try client.writeAll($0) }
        var received = [UInt8](repeating: 0, count: message.count)
        try received.withUnsafeMutableBytes { try server.readExactly(into: $0) }
        #expect(received == message)
    }

    @Test(arguments: [("::1", "::1"), ("127.0.0.1", "localhost")])
    func connectsOverIPv6AndByName(listenOn: String, connectTo: String) throws {
        let listener = try TCPListener(Endpoint(host: listenOn, port: 0))
        let client = try TCPStream.connect(Endpoint(host: connectTo, port: listener.port), timeoutMs: 2000)
        let server = try listener.accept(timeoutMs: 2000)
        #expect(client.peerDescription == Endpoint(host: listenOn, port: listener.port).description)
        try [UInt8(42)].withUnsafeBytes { try server.writeAll($0) }
        var byte: UInt8 = 0
        try withUnsafeMutableBytes(of: &byte) { try client.readExactly(into: $0) }
        #expect(byte == 42)
    }

    @Test func gatherWriteDeliversEveryPartInOrder() throws {
        let (client, server) = try loopbackPair()
        // Parts larger than the socket buffers force partial writes the writer must resume.
        let parts: [[UInt8]] = [
            [1, 2, 3], [], [UInt8](repeating: 7, count: 3 << 20), [9], [UInt8](repeating: 5, count: 100_000),
        ]
        let total = parts.reduce(0) { $0 + $1.count }
        let reader = JoinableThread { () throws -> [UInt8] in
            var received = [UInt8](repeating: 0, count: total)
            try received.withUnsafeMutableBytes { try server.readExactly(into: $0) }
            return received
        }
        let pointers = parts.map { part in
            part.withUnsafeBytes { UnsafeRawBufferPointer(start: $0.baseAddress, count: $0.count) }
        }
        // Arrays keep their storage while `parts` is alive; the pointers are only used here.
        try withExtendedLifetime(parts) { try client.writeAll(pointers) }
        #expect(try reader.join() == parts.flatMap { $0 })
    }

    @Test func receiveTimeoutIsReportedAsTimeout() throws {
        let (client, _server) = try loopbackPair()
        try client.setReceiveTimeout(ms: 150)
        let start = nowMilliseconds()
        var buffer = [UInt8](repeating: 0, count: 8)
        let error = transportError { try buffer.withUnsafeMutableBytes { try client.readExactly(into: $0) } }
        let elapsed = milliseconds(since: start)
        #expect(error?.code == .timeout, "\(String(describing: error))")
        #expect(elapsed >= 140 && elapsed < 1500, "timed out after \(elapsed) ms")
        withExtendedLifetime(_server) {}
    }

    @Test func endOfStreamIsPeerClosed() throws {
        let (client, server) = try loopbackPair()
        try [UInt8](repeating: 1, count: 3).withUnsafeBytes { try server.writeAll($0) }
        server.close()
        var buffer = [UInt8](repeating: 0, count: 8)
        let midway = transportError { try buffer.withUnsafeMutableBytes { try client.readExactly(into: $0) } }
        #expect(midway?.code == .peerClosed)
        #expect(midway?.message.contains("3 of 8 bytes") == true, "\(midway?.message ?? "")")
        let atStart = transportError { try buffer.withUnsafeMutableBytes { try client.readExactly(into: $0) } }
        #expect(atStart?.code == .peerClosed)
        #expect(atStart?.message.contains("closed the connection") == true)
    }

    @Test func writingToAClosedPeerIsPeerClosed() throws {
        let (client, server) = try loopbackPair()
        server.close()
        let chunk = [UInt8](repeating: 0, count: 1 << 16)
        // The first writes may still land in the kernel buffer; the RST then fails one.
        let error = transportError {
            for _ in 0..<200 { try chunk.withUnsafeBytes { try client.writeAll($0) } }
        }
        #expect(error?.code == .peerClosed, "\(String(describing: error))")
    }

    @Test func connectingToAClosedPortFailsClearly() throws {
        var port: UInt16 = 0
        do {
            let listener = try TCPListener(loopback)
            port = listener.port
        }  // the listener is released here, so nothing listens on the port
        let error = transportError {
            _ = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: port), timeoutMs: 2000)
        }
        #expect(error?.code == .connect)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
        #expect(error?.message.contains("ECONNREFUSED") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("start the destination") == true)
    }

    @Test func unresolvableHostIsAnAddressError() {
        let error = transportError {
            _ = try TCPStream.connect(Endpoint(host: "no-such-host.invalid", port: 1), timeoutMs: 2000)
        }
        #expect(error?.code == .address)
        #expect(error?.message.contains("no-such-host.invalid") == true)
    }

    @Test func listeningOnABusyPortFailsClearly() throws {
        let first = try TCPListener(loopback)
        let error = transportError { _ = try TCPListener(Endpoint(host: "127.0.0.1", port: first.port)) }
        #expect(error?.code == .listen)
        #expect(error?.message.contains("EADDRINUSE") == true, "\(error?.message ?? "")")
    }

    @Test func acceptTimesOutAndCloseWakesAWaitingAccept() throws {
        let listener = try TCPListener(loopback)
        let start = nowMilliseconds()
        #expect(transportError { _ = try listener.accept(timeoutMs: 100) }?.code == .timeout)
        #expect(milliseconds(since: start) >= 90)

        let waiter = JoinableThread { () -> TransportError? in
            transportError { _ = try listener.accept(timeoutMs: 5000) }
        }
        usleep(100_000)
        let closedAt = nowMilliseconds()
        listener.close()
        let error = try waiter.join()
        #expect(error?.code == .accept, "\(String(describing: error))")
        #expect(milliseconds(since: closedAt) < 1000)
    }

    @Test func bufferSizesCanBeRaised() throws {
        let (client, _) = try loopbackPair()
        client.setBufferSizes(send: 4 << 20, receive: 4 << 20)
        let sizes = client.bufferSizes
        // Linux reports double the request (the other half is for bookkeeping).
        #expect(sizes.send >= 4 << 20)
        #expect(sizes.receive >= 4 << 20)
    }
}
