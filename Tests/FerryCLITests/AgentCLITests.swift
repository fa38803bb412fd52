import FerryAgent
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

/// `ferry agent` and `ferry host show` as processes (issue 14, items 1, 6, 7 and 8): the agent
/// starts and answers, refuses what is not signed with its key without changing anything, stops
/// on SIGTERM after finishing a request in flight, and keeps a second agent off its directory.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentCLITests {
    /// A `ferry agent` on a free loopback port, with a fresh key and state directory.
    struct AgentProcess {
        let scratch: Scratch
        let keyFile: String
        let stateDirectory: String
        let process: FerryProcess
        let port: UInt16

        /// `sharing` names another agent's key file to use instead of a fresh key.
        init(_ name: String = #function, extra: [String] = [], sharing sharedKeyFile: String? = nil) throws {
            scratch = Scratch(name)
            keyFile = sharedKeyFile ?? scratch.file("agent.key")
            stateDirectory = scratch.file("state")
            if sharedKeyFile == nil { try SharedKey.generate(path: keyFile) }
            process = try FerryProcess(
                ["agent", "--state-dir", stateDirectory, "--listen", "127.0.0.1:0", "--key-file", keyFile] + extra)
            let line = try #require(
                process.waitForStderrLine(containing: "agent listening on"), "the agent did not start")
            let after = try #require(line.range(of: "127.0.0.1:")?.upperBound)
            port = try #require(UInt16(line[after...].prefix { $0.isNumber }))
        }

        var url: String { "http://127.0.0.1:\(port)" }
        var pid: Int32 { process.process.processIdentifier }

        func client(key: SharedKey? = nil) throws -> AgentClient {
            try AgentClient(url: url, key: key ?? SharedKey.load(path: keyFile))
        }

        /// SIGTERM, then the outcome (killed after `timeout` seconds).
        func terminate(timeout: Double = 20) -> FerryProcess.Outcome {
            kill(pid, SIGTERM)
            return process.wait(timeout: timeout)
        }
    }

    /// One request written by hand on a raw socket (any header, any pacing); the whole answer.
    struct RawRequest {
        let stream: TCPStream

        init(port: UInt16) throws {
            stream = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: port), timeoutMs: 5000)
            try stream.setReceiveTimeout(ms: 20_000)
        }

        func write(_ text: String) throws {
            try Array(text.utf8).withUnsafeBytes { try stream.writeAll($0) }
        }

        /// Everything until the agent closes the connection (requests say `Connection: close`).
        func readAll() throws -> (status: Int, text: String) {
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = try chunk.withUnsafeMutableBytes { try stream.readAvailable(into: $0) }
                if count == 0 { break }
                bytes += chunk[..<count]
            }
            let text = String(decoding: bytes, as: UTF8.self)
            let status = text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
            return (status, text)
        }

        static func send(port: UInt16, _ text: String) throws -> (status: Int, text: String) {
            let request = try RawRequest(port: port)
            try request.write(text)
            return try request.readAll()
        }
    }

    /// Every path under `directory` with its type, size and modification time, to show that
    /// nothing changed.
    static func snapshot(_ directory: String) throws -> [String] {
        let enumerator = try #require(FileManager.default.enumerator(atPath: directory))
        var entries: [String] = []
        while let name = enumerator.nextObject() as? String {
            var info = stat()
            guard lstat(directory + "/" + name, &info) == 0 else { continue }
            entries.append("\(name) \(info.st_mode) \(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)")
        }
        return entries.sorted()
    }

    @Test func theAgentStartsAnswersAndStopsOnSIGTERM() throws {
        let agent = try AgentProcess()
        let shown = try FerryProcess.run(["host", "show", "--agent", agent.url, "--key-file", agent.keyFile])
        #expect(shown.status == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains("capacity: \(try HostProbe.vcpus()) vCPUs"), "\(shown.stdout)")
        #expect(shown.stdout.contains("health: ok"), "\(shown.stdout)")
        #expect(shown.stdout.contains("agent PID \(agent.pid)"), "\(shown.stdout)")
        // FERRY_AGENT and FERRY_KEY_FILE stand in for the options; --json prints the agent's JSON.
        setenv("FERRY_AGENT", agent.url, 1)
        setenv("FERRY_KEY_FILE", agent.keyFile, 1)
        defer {
            unsetenv("FERRY_AGENT")
            unsetenv("FERRY_KEY_FILE")
        }
        let json = try FerryProcess.run(["host", "show", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let capacity = try #require(object["capacity"] as? [String: Any])
        #expect(capacity["vcpus"] as? Int == (try HostProbe.vcpus()))
        let started = Date()
        let outcome = agent.terminate()
        #expect(outcome.status == 0 && outcome.signal == nil, "\(outcome.stderr)")
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(outcome.stderr.contains("agent stopped; guests were left running"), "\(outcome.stderr)")
        // The lock went with the process: the holder's sidecar is gone, the layout stays (the
        // inventory with its write-ahead log files, which SQLite may keep).
        let left = try FileManager.default.contentsOfDirectory(atPath: agent.stateDirectory).sorted()
        #expect(
            left.filter { !$0.hasPrefix("inventory.sqlite-") } == [
                "agent.lock", "disks", "guests", "inventory.sqlite", "migrations",
            ])
    }

    @Test func requestsWithoutTheKeyAre401AndChangeNothing() throws {
        let agent = try AgentProcess()
        let before = try Self.snapshot(agent.stateDirectory)
        let host = "127.0.0.1:\(agent.port)"
        let head = "Host: \(host)\r\nConnection: close\r\n"
        let body = #"{"name":"web-1","kind":"builtin","vcpus":1,"memory_bytes":67108864,"disks":[],"seed":1}"#
        let valid = RequestSignature(key: try SharedKey.load(path: agent.keyFile))
        let replayed = valid.authorization(method: "GET", host: host, target: "/v1/host", body: [UInt8]())
        let other = RequestSignature(key: SharedKey.random())
        let keyHex = try String(contentsOfFile: agent.keyFile, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        let cases: [(String, String, String)] = [
            ("no credential", "GET /v1/host HTTP/1.1\r\n\(head)\r\n", "missing_credentials"),
            (
                "no credential, a create",
                "POST /v1/guests HTTP/1.1\r\n\(head)Content-Length: \(body.utf8.count)\r\n\r\n\(body)",
                "missing_credentials"
            ),
            ("no credential, a delete", "DELETE /v1/guests/web-1 HTTP/1.1\r\n\(head)\r\n", "missing_credentials"),
            (
                "the key itself as a bearer token",
                "GET /v1/host HTTP/1.1\r\n\(head)Authorization: Bearer \(keyHex)\r\n\r\n",
                "missing_credentials"
            ),
            (
                "another key",
                "DELETE /v1/guests/web-1 HTTP/1.1\r\n\(head)Authorization: \(other.authorization(method: "DELETE", host: host, target: "/v1/guests/web-1", body: [UInt8]()))\r\n\r\n",
                "wrong_key"
            ),
            (
                "a malformed credential",
                "GET /v1/host HTTP/1.1\r\n\(head)Authorization: Ferry-HMAC-SHA256 key=zz, ts=1\r\n\r\n",
                "malformed_credentials"
            ),
            (
                "a signature for another path",
                "DELETE /v1/guests/web-1 HTTP/1.1\r\n\(head)Authorization: \(valid.authorization(method: "DELETE", host: host, target: "/v1/guests/web-2", body: [UInt8]()))\r\n\r\n",
                "bad_signature"
            ),
            (
                "a signature for another body",
                "POST /v1/guests HTTP/1.1\r\n\(head)Content-Length: \(body.utf8.count)\r\nAuthorization: \(valid.authorization(method: "POST", host: host, target: "/v1/guests", body: Array("{}".utf8)))\r\n\r\n\(body)",
                "bad_signature"
            ),
        ]
        for (what, request, code) in cases {
            let (status, text) = try RawRequest.send(port: agent.port, request)
            #expect(status == 401, "\(what): \(text)")
            #expect(text.contains(#""code":"\#(code)""#), "\(what): \(text)")
            #expect(text.lowercased().contains("www-authenticate: ferry-hmac-sha256"), "\(what): \(text)")
        }
        // A captured credential works once; its replay is refused.
        let first = try RawRequest.send(
            port: agent.port, "GET /v1/host HTTP/1.1\r\n\(head)Authorization: \(replayed)\r\n\r\n")
        #expect(first.status == 200, "\(first.text)")
        let again = try RawRequest.send(
            port: agent.port, "GET /v1/host HTTP/1.1\r\n\(head)Authorization: \(replayed)\r\n\r\n")
        #expect(again.status == 401 && again.text.contains("replayed_credentials"), "\(again.text)")
        // `ferry host show` with another key exits 3 and says why.
        let otherKey = agent.scratch.file("other.key")
        try SharedKey.generate(path: otherKey)
        let refused = try FerryProcess.run(["host", "show", "--agent", agent.url, "--key-file", otherKey])
        #expect(refused.status == 3, "\(refused.stderr)")
        #expect(refused.stderr.contains("wrong_key"), "\(refused.stderr)")
        #expect(try Self.snapshot(agent.stateDirectory) == before)
        // The metrics counted each refusal by status.
        let metrics = try agent.client().checked(agent.client().send("GET", "/metrics"))
        let samples = try PrometheusText.parse(String(decoding: metrics.body, as: UTF8.self))
        let refusals = samples.samples.filter {
            $0.name == AgentMetrics.Name.apiRequestDuration + "_count" && $0.labels["status"] == "401"
        }
        #expect(refusals.reduce(0) { $0 + $1.value } == Double(cases.count + 2))
        #expect(agent.terminate().status == 0)
    }

    @Test func sigtermLetsARequestInFlightFinishThenExits0() throws {
        let agent = try AgentProcess()
        let key = try SharedKey.load(path: agent.keyFile)
        let body = #"{"slow":true}"#
        let authorization = RequestSignature(key: key).authorization(
            method: "GET", host: "127.0.0.1:\(agent.port)", target: "/v1/host", body: Array(body.utf8))
        // An idle connection (no request at all) must not hold the stop up.
        let idle = try RawRequest(port: agent.port)
        let slow = try RawRequest(port: agent.port)
        try slow.write(
            "GET /v1/host HTTP/1.1\r\nHost: 127.0.0.1:\(agent.port)\r\nConnection: close\r\nAuthorization: \(authorization)\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
                + body.prefix(5))
        Thread.sleep(forTimeInterval: 0.3)
        let signalled = Date()
        kill(agent.pid, SIGTERM)
        Thread.sleep(forTimeInterval: 1.0)
        #expect(agent.process.process.isRunning, "the agent exited with a request in flight")
        // No new connection is accepted while it stops.
        #expect(throws: (any Error).self) {
            let late = try RawRequest.send(
                port: agent.port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if late.status == 0 { throw TransportError(.peerClosed, "closed") }
        }
        try slow.write(String(body.dropFirst(5)))
        let answer = try slow.readAll()
        #expect(answer.status == 200, "\(answer.text)")
        #expect(answer.text.contains(#""vcpus""#))
        let outcome = agent.process.wait(timeout: 10)
        #expect(outcome.status == 0 && outcome.signal == nil, "\(outcome.stderr)")
        #expect(Date().timeIntervalSince(signalled) < 5, "the stop took \(Date().timeIntervalSince(signalled)) s")
        _ = idle
    }

    @Test func aSecondAgentOnTheSameStateDirectoryIsRefusedNamingTheHolder() throws {
        let first = try AgentProcess()
        let before = try Self.snapshot(first.stateDirectory)
        let second = try FerryProcess.run(
            ["agent", "--state-dir", first.stateDirectory, "--listen", "127.0.0.1:0", "--key-file", first.keyFile],
            timeout: 20)
        #expect(second.status == 9, "\(second.stderr)")
        #expect(
            second.stderr.contains("another agent runs on the state directory \(first.stateDirectory)"),
            "\(second.stderr)")
        #expect(second.stderr.contains("PID \(first.pid)"), "\(second.stderr)")
        #expect(second.stderr.contains("ferry agent"), "the holder's command line is named: \(second.stderr)")
        #expect(try Self.snapshot(first.stateDirectory) == before)
        // The first agent is untouched.
        #expect(try first.client().get("/v1/host", as: HostReport.self).agent.pid == first.pid)
        #expect(first.terminate().status == 0)
    }

    @Test func metricsAreValidPrometheusTextAndCountTheRequests() throws {
        let agent = try AgentProcess()
        let client = try agent.client()
        for _ in 0..<5 { _ = try client.get("/v1/host", as: HostReport.self) }
        _ = try client.send("GET", "/v1/nothing")
        let response = try client.checked(client.send("GET", "/metrics"))
        #expect(response.header("content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let text = String(decoding: response.body, as: UTF8.self)
        let samples = try PrometheusText.parse(text)
        let name = AgentMetrics.Name.apiRequestDuration
        #expect(samples.types[name] == "histogram", "\(text)")
        #expect(samples[name + "_count", ["route": "/v1/host", "method": "GET", "status": "200"]] == 5, "\(text)")
        #expect(samples[name + "_count", ["route": "unmatched", "method": "GET", "status": "404"]] == 1, "\(text)")
        #expect(samples[AgentMetrics.Name.hostMemoryBytes, [:]] == Double(try HostProbe.memory().total))
        #expect(agent.terminate().status == 0)
    }

    /// Not asserted (the issue's target is p99 ≤ 10 ms at 100 requests/s): printed for the record.
    @Test func latencyOfGetHost() throws {
        let agent = try AgentProcess()
        let client = try agent.client()
        let latencies = try Latencies(count: 200) { _ = try client.get("/v1/host", as: HostReport.self) }
        print("GET /v1/host over loopback, 200 sequential signed requests (new connection each): \(latencies.summary)")
        #expect(agent.terminate().status == 0)
    }

    /// The host report carries the kernel's figures and the agent's own facts.
    @Test func hostReportsTheKernelsFigures() throws {
        let agent = try AgentProcess()
        let report = try agent.client().get("/v1/host", as: HostReport.self)
        #expect(report.capacity.vcpus == (try HostProbe.vcpus()))
        #expect(report.capacity.vcpus >= 1)
        let memory = try HostProbe.memory()
        #expect(report.capacity.memoryBytes == memory.total)
        #expect(report.usage.memoryAvailableBytes > 0 && report.usage.memoryAvailableBytes <= memory.total)
        var info = statvfs()
        #expect(statvfs(agent.stateDirectory, &info) == 0)
        #expect(report.capacity.diskBytes == UInt64(info.f_blocks) * UInt64(info.f_frsize))
        #expect(report.health.ok)
        #expect(report.health.stateDirectoryWritable.ok)
        #expect(report.health.kvm.ok == (access("/dev/kvm", R_OK | W_OK) == 0))
        #expect(report.agent.pid == agent.pid)
        #expect(report.agent.listen == "127.0.0.1:\(agent.port)")
        #expect(report.agent.stateDirectory == agent.stateDirectory)
        // The layout, private to root: the lock, its holder's sidecar, disks, guests, the inventory.
        let names = try FileManager.default.contentsOfDirectory(atPath: agent.stateDirectory).sorted()
        #expect(
            names == [
                "agent.lock", "agent.lock.lock", "disks", "guests", "inventory.sqlite", "inventory.sqlite-shm",
                "inventory.sqlite-wal", "migrations",
            ])
        var state = stat()
        #expect(stat(agent.stateDirectory, &state) == 0 && state.st_mode & 0o777 == 0o700)
        #expect(agent.terminate().status == 0)
    }

    /// The state directory removed under a running agent: the report is a 500 naming the call
    /// that failed, and the agent goes on answering.
    @Test func aVanishedStateDirectoryIsA500NamingTheCall() throws {
        let agent = try AgentProcess()
        try FileManager.default.removeItem(atPath: agent.stateDirectory)
        let response = try agent.client().send("GET", "/v1/host")
        #expect(response.status == 500)
        let body = try JSONDecoder().decode(AgentAPIError.Body.self, from: Data(response.body))
        #expect(body.error.code == "internal_error")
        #expect(body.error.message.contains("statvfs"), "\(body.error.message)")
        #expect(try agent.client(key: nil).send("GET", "/healthz").status == 200)
        try FileManager.default.createDirectory(atPath: agent.stateDirectory, withIntermediateDirectories: true)
        #expect(agent.terminate().status == 0)
    }

    /// Errors in the API's format: an unknown route is a 404, a body announced over the limit a
    /// 413 before it is read, and a client signing with another key gets `wrong_key`.
    @Test func unknownRoutesOversizedBodiesAndWrongKeysAnswerInTheAPIsFormat() throws {
        let agent = try AgentProcess()
        let missing = try agent.client().send("GET", "/v1/nothing")
        #expect(missing.status == 404)
        #expect(try JSONDecoder().decode(AgentAPIError.Body.self, from: Data(missing.body)).error.code == "not_found")
        let oversized = try RawRequest.send(
            port: agent.port,
            "POST /v1/guests HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: \(2 << 20)\r\n\r\n{}")
        #expect(oversized.status == 413, "\(oversized.text)")
        #expect(oversized.text.contains(#""code":"body_too_large""#), "\(oversized.text)")
        do {
            _ = try agent.client(key: SharedKey(bytes: Array(repeating: 7, count: 32))).get(
                "/v1/host", as: HostReport.self)
            Issue.record("a request signed with another key was answered")
        } catch let error as AgentClientError {
            #expect(error.code == .unauthenticated)
            #expect(error.status == 401)
            #expect(error.apiError?.code == "wrong_key")
        }
        #expect(agent.terminate().status == 0)
    }

    @Test func aTakenPortExits5NamingTheAddress() throws {
        let first = try AgentProcess()
        let second = try FerryProcess.run(
            [
                "agent", "--state-dir", first.scratch.file("other-state"), "--listen", "127.0.0.1:\(first.port)",
                "--key-file", first.keyFile,
            ], timeout: 20)
        #expect(second.status == 5, "\(second.stderr)")
        #expect(second.stderr.contains("cannot listen on 127.0.0.1:\(first.port)"), "\(second.stderr)")
        #expect(first.terminate().status == 0)
    }

    @Test func theAgentNeedsAKeyFile() throws {
        let scratch = Scratch()
        let outcome = try FerryProcess.run(["agent", "--state-dir", scratch.file("state")], timeout: 20)
        #expect(outcome.status == 2, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("ferry keygen"), "\(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("state")))
    }

    @Test func hostShowWithNoAgentListeningExits5() throws {
        let scratch = Scratch()
        try SharedKey.generate(path: scratch.file("k"))
        let listener = try TCPListener(Endpoint(host: "127.0.0.1", port: 0))
        let port = listener.port
        listener.close()
        let outcome = try FerryProcess.run(
            ["host", "show", "--agent", "http://127.0.0.1:\(port)", "--key-file", scratch.file("k")], timeout: 20)
        #expect(outcome.status == 5, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("cannot reach the agent at http://127.0.0.1:\(port)"), "\(outcome.stderr)")
    }
}
