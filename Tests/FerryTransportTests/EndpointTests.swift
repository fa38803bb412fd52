import FerryTransport
import Testing

@Suite struct EndpointTests {
    @Test(arguments: [
        ("127.0.0.1:7700", "127.0.0.1", UInt16(7700)),
        ("[::1]:7700", "::1", 7700),
        ("localhost:7700", "localhost", 7700),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535),
        ("dest.example:1", "dest.example", 1),
    ])
    func parsesHostAndPort(text: String, host: String, port: UInt16) throws {
        let endpoint = try Endpoint.parse(text)
        #expect(endpoint.host == host)
        #expect(endpoint.port == port)
        #expect(endpoint.description == text)
    }

    @Test(arguments: [
        ("foo", "expected HOST:PORT"),
        ("", "expected HOST:PORT"),
        (":7700", "host is empty"),
        ("host:", "port is missing"),
        ("host:65536", "not a number from 0 to 65535"),
        ("host:-1", "not a number from 0 to 65535"),
        ("host:77a", "not a number from 0 to 65535"),
        ("::1:7700", "needs brackets"),
        ("[::1]7700", "':PORT' after ']'"),
        ("[::1:7700", "missing ']'"),
        ("[1.2.3.4]:7", "only for IPv6"),
    ])
    func rejectsMalformedText(text: String, expected: String) {
        let error = transportError { _ = try Endpoint.parse(text) }
        #expect(error?.code == .address)
        #expect(error?.message.contains("'\(text)'") == true, "message quotes the input: \(error?.message ?? "")")
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
    }

    /// A port alone takes the default host; anything else parses as `HOST:PORT` (and fails as
    /// it would there).
    @Test(arguments: [
        ("7700", "127.0.0.1:7700"), (":7700", "127.0.0.1:7700"), ("0", "127.0.0.1:0"),
        ("10.0.0.2:7700", "10.0.0.2:7700"), ("[::1]:1", "[::1]:1"),
    ])
    func aPortAloneTakesTheDefaultHost(text: String, expected: String) throws {
        #expect(try Endpoint.parse(text, defaultHost: "127.0.0.1").description == expected)
        #expect(try Endpoint.parse("7700", defaultHost: "::1").description == "[::1]:7700")
        #expect(transportError { _ = try Endpoint.parse(":", defaultHost: "127.0.0.1") }?.code == .address)
        #expect(transportError { _ = try Endpoint.parse("99999", defaultHost: "127.0.0.1") }?.code == .address)
        #expect(transportError { _ = try Endpoint.parse("foo", defaultHost: "127.0.0.1") }?.code == .address)
    }
}
