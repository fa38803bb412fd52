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

    /// The hardware's signals round-trip; absent (an older agent) they are nil, which the
    /// controller reads as healthy; a state this Ferry does not know reads as a warning.
    @Test func signalsRoundTripAndAreOptional() throws {
        let heartbeat = HostHeartbeat(
            hostID: "h1", agentURL: "http://10.0.0.2:7460", vcpus: 4, memoryBytes: 1 << 30, diskBytes: 1 << 32,
            healthy: true, healthDetail: "ok",
            signals: .init(
                state: .failing, reason: "memory controller mc0: 1 uncorrected error", evacuateWithinSeconds: 900),
            guests: [])
        let encoded = try JSONEncoder().encode(heartbeat)
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        let signals = try #require(object["signals"] as? [String: Any])
        #expect(signals["state"] as? String == "failing" && signals["evacuate_within_s"] as? Double == 900)
        #expect(try JSONDecoder().decode(HostHeartbeat.self, from: encoded) == heartbeat)

        let older = Data(
            """
            {"host_id": "h1", "agent_url": "http://10.0.0.2:7460", "vcpus": 4, "memory_bytes": 1073741824,
             "disk_bytes": 4294967296, "healthy": true, "health_detail": "ok", "guests": []}
            """.utf8)
        #expect(try JSONDecoder().decode(HostHeartbeat.self, from: older).signals == nil)
        let newer = Data(
            """
            {"host_id": "h1", "agent_url": "http://10.0.0.2:7460", "vcpus": 4, "memory_bytes": 1073741824,
             "disk_bytes": 4294967296, "healthy": true, "health_detail": "ok", "guests": [],
             "signals": {"state": "smouldering", "reason": "fan 3"}}
            """.utf8)
        let unknown = try #require(try JSONDecoder().decode(HostHeartbeat.self, from: newer).signals)
        #expect(unknown == .init(state: .warning, reason: "smouldering: fan 3"))
    }

    /// The power round-trips; absent (an older agent) or one this Ferry does not know, it is nil,
    /// which the controller reads as on.
    @Test func powerRoundTripsAndIsOptional() throws {
        let heartbeat = HostHeartbeat(
            hostID: "h1", agentURL: "http://10.0.0.2:7460", vcpus: 4, memoryBytes: 1 << 30, diskBytes: 1 << 32,
            healthy: true, healthDetail: "ok", power: .standby, guests: [])
        let encoded = try JSONEncoder().encode(heartbeat)
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        #expect(object["power"] as? String == "standby")
        #expect(try JSONDecoder().decode(HostHeartbeat.self, from: encoded) == heartbeat)
        let newer = Data(
            """
            {"host_id": "h1", "agent_url": "http://10.0.0.2:7460", "vcpus": 4, "memory_bytes": 1073741824,
             "disk_bytes": 4294967296, "healthy": true, "health_detail": "ok", "guests": [], "power": "hibernating"}
            """.utf8)
        #expect(try JSONDecoder().decode(HostHeartbeat.self, from: newer).power == nil)
    }
}
