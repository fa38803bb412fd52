import FerryAgent
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

/// Issue 14, authentication: a signed request is bound to the agent it was sent to (its `Host`
/// is signed), and the read-only metrics token reads `/metrics` only. Real `ferry agent`
/// processes, requests written by hand.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentAudienceCLITests {
    typealias AgentProcess = AgentCLITests.AgentProcess
    typealias RawRequest = AgentCLITests.RawRequest

    static let createBody =
        #"{"name":"web-1","kind":"builtin","vcpus":1,"memory_bytes":67108864,"disks":[],"seed":1}"#

    /// One request with the `Host` and `Authorization` given (nil: no such header).
    static func send(
        to port: UInt16, _ method: String, _ target: String, host: String?, authorization: String?,
        body: String = "", extraHeaders: String = ""
    ) throws -> (status: Int, text: String) {
        var head = "\(method) \(target) HTTP/1.1\r\nConnection: close\r\n" + extraHeaders
        if let host { head += "Host: \(host)\r\n" }
        if let authorization { head += "Authorization: \(authorization)\r\n" }
        if !body.isEmpty || method == "POST" {
            head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
        }
        return try RawRequest.send(port: port, head + "\r\n" + body)
    }

    static func code(_ answer: (status: Int, text: String)) -> String? {
        guard let start = answer.text.range(of: #""code":""#)?.upperBound else { return nil }
        return String(answer.text[start...].prefix { $0 != "\"" })
    }

    @Test func aRequestSignedForOneAgentIsRefusedByAnotherSharingTheKey() throws {
        let first = try AgentProcess()
        let second = try AgentProcess(sharing: first.keyFile)
        let signature = RequestSignature(key: try SharedKey.load(path: first.keyFile))
        let firstHost = "127.0.0.1:\(first.port)"
        let before = try AgentCLITests.snapshot(second.stateDirectory)
        // A create and a read, each signed for the first agent, captured and sent to the second.
        let create = signature.authorization(
            method: "POST", host: firstHost, target: "/v1/guests", body: Array(Self.createBody.utf8))
        let read = signature.authorization(method: "GET", host: firstHost, target: "/v1/host", body: [UInt8]())
        for (method, target, authorization, body) in [
            ("POST", "/v1/guests", create, Self.createBody), ("GET", "/v1/host", read, ""),
        ] {
            let replayed = try Self.send(
                to: second.port, method, target, host: firstHost, authorization: authorization, body: body)
            #expect(replayed.status == 401, "\(method) \(target): \(replayed.text)")
            #expect(Self.code(replayed) == "wrong_audience", "\(replayed.text)")
            #expect(replayed.text.contains("Host \(firstHost)"), "names the Host it got: \(replayed.text)")
            #expect(replayed.text.contains("127.0.0.1:\(second.port)"), "names what it serves: \(replayed.text)")
        }
        #expect(try AgentCLITests.snapshot(second.stateDirectory) == before)
        #expect(try second.client().get("/v1/guests", as: GuestList.self).guests.isEmpty)
        // The read was a genuine request of the first agent: there it is answered (its nonce was
        // not used up by the refusal, nor is it shared).
        let genuine = try Self.send(to: first.port, "GET", "/v1/host", host: firstHost, authorization: read)
        #expect(genuine.status == 200, "\(genuine.text)")
        // The second agent accepts a request signed for any of its loopback names.
        for name in ["127.0.0.1", "localhost", "[::1]"] {
            let host = "\(name):\(second.port)"
            let own = signature.authorization(method: "GET", host: host, target: "/v1/host", body: [UInt8]())
            let answer = try Self.send(to: second.port, "GET", "/v1/host", host: host, authorization: own)
            #expect(answer.status == 200, "\(host): \(answer.text)")
        }
        #expect(first.terminate().status == 0)
        #expect(second.terminate().status == 0)
    }

    @Test func aHostAlteredAfterSigningOrMissingIsRefused() throws {
        let agent = try AgentProcess()
        let signature = RequestSignature(key: try SharedKey.load(path: agent.keyFile))
        let signedHost = "127.0.0.1:\(agent.port)"
        let before = try AgentCLITests.snapshot(agent.stateDirectory)
        let create = signature.authorization(
            method: "POST", host: signedHost, target: "/v1/guests", body: Array(Self.createBody.utf8))
        // Rewritten to another name of this very agent: the signature no longer matches.
        let altered = try Self.send(
            to: agent.port, "POST", "/v1/guests", host: "localhost:\(agent.port)", authorization: create,
            body: Self.createBody)
        #expect(altered.status == 401 && Self.code(altered) == "bad_signature", "\(altered.text)")
        let missing = try Self.send(
            to: agent.port, "POST", "/v1/guests", host: nil, authorization: create, body: Self.createBody)
        #expect(missing.status == 401 && Self.code(missing) == "wrong_audience", "\(missing.text)")
        #expect(missing.text.contains("no Host header"), "\(missing.text)")
        let twice = try Self.send(
            to: agent.port, "POST", "/v1/guests", host: signedHost, authorization: create, body: Self.createBody,
            extraHeaders: "Host: \(signedHost)\r\n")
        #expect(twice.status == 401 && Self.code(twice) == "wrong_audience", "\(twice.text)")
        #expect(twice.text.contains("more than one Host header"), "\(twice.text)")
        #expect(try AgentCLITests.snapshot(agent.stateDirectory) == before)
        #expect(try agent.client().get("/v1/guests", as: GuestList.self).guests.isEmpty)
        #expect(agent.terminate().status == 0)
    }

    /// A token file of mode 0600 in the agent's scratch directory.
    static func tokenFile(_ agentScratch: Scratch, _ token: String, mode: mode_t = 0o600) throws -> String {
        let path = agentScratch.file("metrics.token")
        try (token + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        #expect(chmod(path, mode) == 0)
        return path
    }

    @Test func theMetricsTokenReadsMetricsAndNothingElse() throws {
        let scratch = Scratch()
        let token = "d4f1c0a2b3e49f8e7d6c5b4a39281706f5e4d3c2b1a09f8e"
        let agent = try AgentProcess(extra: ["--metrics-token-file", try Self.tokenFile(scratch, token)])
        let host = "127.0.0.1:\(agent.port)"
        let before = try AgentCLITests.snapshot(agent.stateDirectory)
        let scraped = try Self.send(to: agent.port, "GET", "/metrics", host: host, authorization: "Bearer \(token)")
        #expect(scraped.status == 200, "\(scraped.text)")
        #expect(scraped.text.contains(AgentMetrics.Name.hostMemoryBytes), "\(scraped.text)")
        let refusals: [(String, String, String, String)] = [
            ("GET", "/v1/host", "", "missing_credentials"), ("GET", "/v1/guests", "", "missing_credentials"),
            ("POST", "/v1/guests", Self.createBody, "missing_credentials"),
            ("POST", "/metrics", "", "missing_credentials"), ("DELETE", "/v1/guests/web-1", "", "missing_credentials"),
        ]
        for (method, target, body, code) in refusals {
            let answer = try Self.send(
                to: agent.port, method, target, host: host, authorization: "Bearer \(token)", body: body)
            #expect(answer.status == 401 && Self.code(answer) == code, "\(method) \(target): \(answer.text)")
        }
        for wrong in [String(token.dropLast()) + "0", token + "0", "x"] {
            let answer = try Self.send(to: agent.port, "GET", "/metrics", host: host, authorization: "Bearer \(wrong)")
            #expect(answer.status == 401 && Self.code(answer) == "bad_token", "'\(wrong)': \(answer.text)")
        }
        // Signed requests still read the metrics.
        #expect(try agent.client().send("GET", "/metrics").status == 200)
        #expect(try AgentCLITests.snapshot(agent.stateDirectory) == before)
        #expect(agent.terminate().status == 0)
    }

    @Test func withoutTheOptionABearerTokenReadsNothing() throws {
        let agent = try AgentProcess()
        let answer = try Self.send(
            to: agent.port, "GET", "/metrics", host: "127.0.0.1:\(agent.port)",
            authorization: "Bearer d4f1c0a2b3e49f8e7d6c5b4a39281706")
        #expect(answer.status == 401 && Self.code(answer) == "missing_credentials", "\(answer.text)")
        #expect(agent.terminate().status == 0)
    }

    @Test(arguments: [
        ("d4f1c0a2b3e49f8e7d6c5b4a39281706", mode_t(0o644), "chmod 600"),
        ("short", mode_t(0o600), "16 to 512 visible ASCII characters"),
        ("has a space in it, sixteen+", mode_t(0o600), "16 to 512 visible ASCII characters"),
    ])
    func aTokenFileOthersCanReadOrMalformedStopsTheStart(token: String, mode: mode_t, says: String) throws {
        let scratch = Scratch()
        let keyFile = scratch.file("agent.key")
        try SharedKey.generate(path: keyFile)
        let outcome = try FerryProcess.run(
            [
                "agent", "--state-dir", scratch.file("state"), "--listen", "127.0.0.1:0", "--key-file", keyFile,
                "--metrics-token-file", try Self.tokenFile(scratch, token, mode: mode),
            ], timeout: 20)
        #expect(outcome.status == 9, "\(outcome.stderr)")
        #expect(outcome.stderr.contains(says), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("metrics token"), "\(outcome.stderr)")
    }
    /// On a wildcard address the agent takes the host's interface addresses (read with
    /// getifaddrs in the agent) at its port, and no other address.
    @Test func aWildcardAgentTakesItsInterfaceAddresses() throws {
        let scratch = Scratch()
        let keyFile = scratch.file("agent.key")
        try SharedKey.generate(path: keyFile)
        let agent = try FerryProcess([
            "agent", "--state-dir", scratch.file("state"), "--listen", "0.0.0.0:0", "--key-file", keyFile,
        ])
        defer {
            kill(agent.process.processIdentifier, SIGTERM)
            _ = agent.wait(timeout: 20)
        }
        let line = try #require(agent.waitForStderrLine(containing: "agent listening on"), "the agent did not start")
        let after = try #require(line.range(of: "0.0.0.0:")?.upperBound)
        let port = try #require(UInt16(line[after...].prefix { $0.isNumber }))
        let signature = RequestSignature(key: try SharedKey.load(path: keyFile))
        let interfaces = RequestAudience.interfaceAddresses().filter { !$0.hasPrefix("127.") && $0 != "::1" }
        // 198.51.100.0/24 is TEST-NET-2, not this host's.
        #expect(!interfaces.contains("198.51.100.7"))
        let hosts =
            interfaces.map { (Endpoint(host: $0, port: port).description, 200) } + [
                ("127.0.0.1:\(port)", 200), ("[::1]:\(port)", 200), ("198.51.100.7:\(port)", 401),
                ("127.0.0.1:\(port == 1 ? 2 : port - 1)", 401),
            ]
        for (host, status) in hosts {
            let authorization = signature.authorization(method: "GET", host: host, target: "/v1/host", body: [UInt8]())
            let answer = try Self.send(to: port, "GET", "/v1/host", host: host, authorization: authorization)
            #expect(answer.status == status, "\(host): \(answer.text)")
            if status == 401 { #expect(Self.code(answer) == "wrong_audience", "\(answer.text)") }
        }
    }
}
