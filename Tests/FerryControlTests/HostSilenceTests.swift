import Foundation
import Testing

@testable import FerryControl

/// When a host counts as silent: measured from its last heartbeat, but never from before the
/// controller started watching (a controller that was down heard nothing, which says nothing
/// about the host).
@Suite struct HostSilenceTests {
    static let base = Date(timeIntervalSince1970: 1_800_000_000)

    static func host(lastHeartbeat: Date) -> HostRecord {
        HostRecord(
            id: "h1", address: "http://10.0.0.2:7460",
            capacity: Resources(vcpus: 4, memoryBytes: 1 << 30, diskBytes: 0),
            health: .healthy, lastHeartbeat: lastHeartbeat, registeredAt: base)
    }

    @Test func aHostIsSilentOnlyPastTheTimeoutSinceItsLastHeartbeat() {
        let host = Self.host(lastHeartbeat: Self.base)
        let watching = Self.base.addingTimeInterval(-60)
        #expect(host.silence(at: Self.base.addingTimeInterval(5), watchingSince: watching, timeout: .seconds(5)) == nil)
        #expect(
            host.silence(at: Self.base.addingTimeInterval(5.5), watchingSince: watching, timeout: .seconds(5)) == 5.5)
    }

    /// The controller was down from base+1 to base+30: at base+31 the host's last heartbeat is
    /// 31 s old, but the controller has listened for 1 s only; it waits the whole timeout from
    /// its start, then reports the silence since the last heartbeat.
    @Test func aRestartedControllerGivesEveryHostAFullTimeout() {
        let host = Self.host(lastHeartbeat: Self.base)
        let started = Self.base.addingTimeInterval(30)
        for offset in [31.0, 33, 35] {
            #expect(
                host.silence(at: Self.base.addingTimeInterval(offset), watchingSince: started, timeout: .seconds(5))
                    == nil, "\(offset)")
        }
        #expect(
            host.silence(at: Self.base.addingTimeInterval(35.25), watchingSince: started, timeout: .seconds(5))
                == 35.25)
    }
}
