import FerrySystem
import Foundation
import Hummingbird

/// `GET /healthz`, `GET /v1/host` and `GET /metrics`: the endpoints that need no guest.
struct HostRoutes: Sendable {
    let probe: HostProbe
    let identity: @Sendable () -> HostReport.Agent
    let metrics: AgentMetrics
    let guests: HostGuests
    let work: BlockingWork
    let health: HealthMonitor
    let power: HostPowerSwitch

    func add(to router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in Self.text("ok\n", contentType: "text/plain; charset=utf-8") }
        // /proc, statvfs and SQLite block: on the agent's own threads.
        router.get("/v1/host") { _, _ in try Self.json(try await work.run { try report() }) }
        router.get("/metrics") { _, _ in
            try await work.run {
                metrics.recordHost(try report())
                try guests.recordMetrics(metrics)
            }
            return Self.text(metrics.text(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
        addPower(to: router)
    }

    /// `POST /v1/host/standby`: refused (409, naming them) while the host holds any guest
    /// (running, stopped, suspended or arriving, or one being created or reserved right now);
    /// `POST /v1/host/wake`: back on. The next heartbeat (within the watch interval) reports it.
    private func addPower(to router: Router<BasicRequestContext>) {
        router.post("/v1/host/standby") { _, _ in
            try await work.run {
                try power.standby { () throws(AgentAPIError) in
                    let held = try guests.list().map { "\($0.specification.name) (\($0.state.rawValue))" }
                    let busy = guests.busyNames().map { "\($0) (busy)" }
                    return held + busy
                }
            }
            return try Self.json(HostPowerView(power: power.power.rawValue))
        }
        router.post("/v1/host/wake") { _, _ in
            try await work.run { try power.wake() }
            return try Self.json(HostPowerView(power: power.power.rawValue))
        }
    }

    private func report() throws(AgentAPIError) -> HostReport {
        do throws(SystemError) {
            var report = try probe.report(agent: identity())
            report.health.signals = health.report(health.look())
            return report
        } catch {
            throw AgentAPIError(.internalServerError, .internalError, "reading the host's figures failed: \(error)")
        }
    }

    static func text(_ text: String, contentType: String) -> Response {
        let buffer = ByteBuffer(string: text)
        var fields = HTTPFields()
        fields[.contentType] = contentType
        fields[.contentLength] = String(buffer.readableBytes)
        return Response(status: .ok, headers: fields, body: ResponseBody(byteBuffer: buffer))
    }

    /// A value as the API's JSON (snake_case keys as the types spell them, sorted).
    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        var bytes = Array(try encoder.encode(value))
        bytes.append(0x0A)
        var fields = HTTPFields()
        fields[.contentType] = "application/json; charset=utf-8"
        fields[.contentLength] = String(bytes.count)
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
