import FerryHostModel
import Foundation
import Testing

/// The heartbeat's JSON: `kvm` round-trips, and a heartbeat without it (an agent older than the
/// field) still decodes, as a host without KVM.
@Suite struct HostHeartbeatTests {
    @Test func kvmRoundTripsAndIsFalseWhenAbsent() throws {
        let heartbeat = HostHeartbeat(
            hostID: "h1", agentURL: "http://10.0.0.2:7460", vcpus: 4, memoryBytes: 1 << 30, diskBytes: 1 << 32,
            kvm: true, healthy: true, healthDetail: "ok", guests: [])
        let encoded = try JSONEncoder().encode(heartbeat)
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        #expect(object["kvm"] as? Bool == true)
        #expect(try JSONDecoder().decode(HostHeartbeat.self, from: encoded) == heartbeat)

        let older = Data(
            """
            {"host_id": "h1", "agent_url": "http://10.0.0.2:7460", "vcpus": 4, "memory_bytes": 1073741824,
             "disk_bytes": 4294967296, "healthy": true, "health_detail": "ok", "guests": []}
            """.utf8)
        let decoded = try JSONDecoder().decode(HostHeartbeat.self, from: older)
        #expect(!decoded.kvm && decoded.hostID == "h1" && decoded.vcpus == 4)
        var withoutKVM = heartbeat
        withoutKVM.kvm = false
        #expect(decoded == withoutKVM)
    }
}
