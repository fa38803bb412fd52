import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

@testable import FerryAgent

/// The agent's API served for real (in this process, over loopback sockets).
@Suite(.serialized)
struct AgentServerTests {
    @Test func healthzAnswersWithoutCredentials() async throws {
        let running = try await RunningAgent()
        let response = try await offPool { try running.client(key: nil).send("GET", "/healthz") }
        #expect(response.status == 200)
        #expect(String(decoding: response.body, as: UTF8.self) == "ok\n")
        try await running.stop()
    }

    @Test func hostReportsTheKernelsFigures() async throws {
        let running = try await RunningAgent()
        let report = try await offPool { try running.client().get("/v1/host", as: HostReport.self) }
        #expect(report.capacity.vcpus == (try HostProbe.vcpus()))
        #expect(report.capacity.vcpus >= 1)
        let memory = try HostProbe.memory()
        #expect(report.capacity.memoryBytes == memory.total)
        #expect(report.usage.memoryAvailableBytes > 0 && report.usage.memoryAvailableBytes <= memory.total)
        var info = statvfs()
        #expect(statvfs(running.scratch.path, &info) == 0)
        #expect(report.capacity.diskBytes == UInt64(info.f_blocks) * UInt64(info.f_frsize))
        #expect(report.health.ok)
        #expect(report.health.stateDirectoryWritable.ok)
        #expect(report.health.kvm.ok == (access("/dev/kvm", R_OK | W_OK) == 0))
        #expect(report.agent.version == "test")
        #expect(report.agent.pid == getpid())
        #expect(report.agent.listen == running.endpoint.description)
        #expect(report.agent.stateDirectory == running.scratch.file("state"))
        try await running.stop()
    }

    @Test func aVanishedStateDirectoryIsA500NamingTheCall() async throws {
        let running = try await RunningAgent()
        // The directory removed under the agent: the report fails with the call that failed.
        let state = running.scratch.file("state")
        try FileManager.default.removeItem(atPath: state)
        defer { try? FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true) }
        let response = try await offPool { try running.client().send("GET", "/v1/host") }
        #expect(response.status == 500)
        let body = try JSONDecoder().decode(AgentAPIError.Body.self, from: Data(response.body))
        #expect(body.error.code == "internal_error")
        #expect(body.error.message.contains("statvfs"))
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try await running.stop()
    }

    @Test(arguments: [
        ("GET", "/v1/host"), ("GET", "/metrics"), ("POST", "/v1/guests"), ("DELETE", "/v1/guests/web-1"),
        ("GET", "/no/such/route"),
    ])
    func unsignedRequestsAre401(method: String, path: String) async throws {
        let running = try await RunningAgent()
        let response = try await offPool {
            try running.client(key: nil).send(method, path, body: Array(#"{"name":"x"}"#.utf8))
        }
        #expect(response.status == 401)
        #expect(response.header("www-authenticate") == "Ferry-HMAC-SHA256")
        #expect(response.header("content-type") == "application/json; charset=utf-8")
        let body = try JSONDecoder().decode(AgentAPIError.Body.self, from: Data(response.body))
        #expect(body.error.code == "missing_credentials")
        try await running.stop()
    }

    @Test func aRequestSignedWithAnotherKeyIs401WrongKey() async throws {
        let running = try await RunningAgent()
        let other = try SharedKey(bytes: Array(repeating: 7, count: 32))
        let outcome = try await offPool {
            Result { () throws -> Void in _ = try running.client(key: other).get("/v1/host", as: HostReport.self) }
        }
        #expect(throws: AgentClientError.self) { try outcome.get() }
        if case .failure(let failure) = outcome, let error = failure as? AgentClientError {
            #expect(error.code == .unauthenticated)
            #expect(error.status == 401)
            #expect(error.apiError?.code == "wrong_key")
        }
        try await running.stop()
    }

    @Test func unknownRoutesAre404InTheAPIsFormat() async throws {
        let running = try await RunningAgent()
        let response = try await offPool { try running.client().send("GET", "/v1/nothing") }
        #expect(response.status == 404)
        let body = try JSONDecoder().decode(AgentAPIError.Body.self, from: Data(response.body))
        #expect(body.error.code == "not_found")
        try await running.stop()
    }

    @Test func aBodyOverTheLimitIs413() async throws {
        let running = try await RunningAgent(bodyLimitBytes: 1000)
        let response = try await offPool {
            try running.client().send("POST", "/v1/host", body: Array(repeating: 0x20, count: 1001))
        }
        #expect(response.status == 413)
        let body = try JSONDecoder().decode(AgentAPIError.Body.self, from: Data(response.body))
        #expect(body.error.code == "body_too_large")
        try await running.stop()
    }

    @Test func metricsCountRequestsByRouteAndStatus() async throws {
        let running = try await RunningAgent()
        let client = try running.client()
        let text = try await offPool {
            for _ in 0..<3 { _ = try client.send("GET", "/v1/host") }
            _ = try running.client(key: nil).send("GET", "/v1/host")
            return String(decoding: try client.checked(client.send("GET", "/metrics")).body, as: UTF8.self)
        }
        let samples = try PrometheusText.parse(text)
        let name = AgentMetrics.Name.apiRequestDuration + "_count"
        #expect(samples[name, ["method": "GET", "route": "/v1/host", "status": "200"]] == 3)
        #expect(samples[name, ["method": "GET", "route": "/v1/host", "status": "401"]] == 1)
        #expect(samples[AgentMetrics.Name.hostVCPUs, [:]] == Double(try HostProbe.vcpus()))
        // No guest or migration series before anything records one.
        #expect(!text.contains(AgentMetrics.Name.guests))
        #expect(!text.contains(AgentMetrics.Name.migrationsFinished))
        try await running.stop()
    }

    @Test func aSecondAgentOnTheSameDirectoryIsRefusedNamingTheHolder() async throws {
        let running = try await RunningAgent()
        do throws(SystemError) {
            _ = try StateDirectory.open(running.scratch.file("state"))
            Issue.record("a second agent got the state directory")
        } catch {
            #expect(error.code == .locked)
            #expect(error.description.contains("PID \(getpid())"))
            #expect(error.description.contains("another agent runs on the state directory"))
        }
        try await running.stop()
        // Once the first has stopped, the directory is free.
        let again = try StateDirectory.open(running.scratch.file("state"))
        again.release()
    }

    @Test func theLayoutIsCreated() async throws {
        let running = try await RunningAgent()
        let state = running.scratch.file("state")
        let names = try FileManager.default.contentsOfDirectory(atPath: state).sorted()
        #expect(names == ["agent.lock", "agent.lock.lock", "disks", "guests"])
        var info = stat()
        #expect(stat(state, &info) == 0 && info.st_mode & 0o777 == 0o700)
        try await running.stop()
    }
}

/// The guest and migration series appear only once recorded, with the labels documented.
struct AgentMetricsTests {
    @Test func seriesAppearWhenRecorded() throws {
        let metrics = AgentMetrics()
        #expect(metrics.text().isEmpty)
        metrics.recordGuests([.running: 2, .stopped: 1])
        metrics.recordMigrationsInFlight(1, direction: .outgoing)
        metrics.recordMigrationFinished(
            direction: .outgoing, outcome: "completed", downtime: .milliseconds(3), totalTime: .seconds(2),
            bytesSent: 1000)
        metrics.recordDisks(provisionedBytes: 4096, allocatedBytes: 512)
        let samples = try PrometheusText.parse(metrics.text())
        #expect(samples[AgentMetrics.Name.guests, ["state": "running"]] == 2)
        #expect(samples[AgentMetrics.Name.guests, ["state": "crashed"]] == 0)
        #expect(samples[AgentMetrics.Name.migrationsInFlight, ["direction": "out"]] == 1)
        #expect(samples[AgentMetrics.Name.migrationsFinished, ["direction": "out", "outcome": "completed"]] == 1)
        #expect(samples[AgentMetrics.Name.migrationBytesSent, [:]] == 1000)
        #expect(samples[AgentMetrics.Name.migrationDowntime + "_count", [:]] == 1)
        #expect(samples[AgentMetrics.Name.migrationDowntime + "_sum", [:]] == 0.003)
        #expect(samples[AgentMetrics.Name.migrationTotalTime + "_bucket", ["le": "2.5"]] == 1)
        #expect(samples[AgentMetrics.Name.diskBytes, ["kind": "allocated"]] == 512)
    }
}
