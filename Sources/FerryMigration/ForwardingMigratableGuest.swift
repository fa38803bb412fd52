import FerryProtocol
import FerrySystem

/// A guest that wraps another (to watch its pauses, defer its stop, or inject a fault into one
/// call) and forwards every requirement it does not implement itself to `forwardee`.
///
/// A conforming class implements only the calls it changes; the others come from this
/// protocol's extension and reach the wrapped guest unchanged.
public protocol ForwardingMigratableGuest: MigratableGuest {
    /// The guest every call not implemented by the wrapper goes to.
    var forwardee: any MigratableGuest { get }
}

extension ForwardingMigratableGuest {
    public var guestKind: UInt16 { forwardee.guestKind }
    public var cpuStateFormat: UInt16 { forwardee.cpuStateFormat }
    public var vcpus: Int { forwardee.vcpus }
    public var memory: GuestMemory { forwardee.memory }
    public var configuration: GuestDescription { forwardee.configuration }
    public func makeDirtyTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String) {
        try forwardee.makeDirtyTracker(choice)
    }
    public func pause() -> UInt64 { forwardee.pause() }
    public func resume() { forwardee.resume() }
    public var throttlePercent: Int {
        get { forwardee.throttlePercent }
        set { forwardee.throttlePercent = newValue }
    }
    public func deviceState() throws -> [DeviceStateSection] { try forwardee.deviceState() }
    public func deviceStateProbe() throws -> [DeviceStateSection]? { try forwardee.deviceStateProbe() }
    public func stopForHandover() -> [UInt64] { forwardee.stopForHandover() }
    public var progressSteps: UInt64? { forwardee.progressSteps }
}
