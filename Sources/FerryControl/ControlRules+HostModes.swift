import Foundation

/// Which changes of a host's mode are allowed (a drain begins, ends, is undone). Pure: both
/// backends read the row in their transaction and ask here.
extension ControlRules {
    /// Whether `host` (as read in the transaction) may go to `mode`, when the caller expects it
    /// in one of `from` (nil: any). A change to the mode it has is no change (nil); a mode other
    /// than expected is refused, so a drain that ends cannot undo an undrain made meanwhile.
    public static func hostModeChange(_ host: HostRecord, to mode: HostMode, from: Set<HostMode>?)
        throws(ControlError) -> HostMode?
    {
        if let from, !from.contains(host.mode) {
            let expected = from.map(\.rawValue).sorted().joined(separator: " or ")
            throw ControlError(
                .transitionRefused,
                "host \(host.id) is \(host.mode.rawValue), not \(expected): it cannot become \(mode.rawValue)")
        }
        return host.mode == mode ? nil : mode
    }

    /// Whether `host` (as read in the transaction) may go to `power`, when the caller expects it
    /// in one of `from` (nil: any); `holding` names the guests that hold capacity on it (or are
    /// moving to it): a host goes to standby only empty, so a guest placed on it meanwhile keeps
    /// it on. The power it has already is no change (nil).
    public static func hostPowerChange(
        _ host: HostRecord, to power: HostPower, from: Set<HostPower>?, holding: [String]
    ) throws(ControlError) -> HostPower? {
        if let from, !from.contains(host.power) {
            let expected = from.map(\.rawValue).sorted().joined(separator: " or ")
            throw ControlError(
                .transitionRefused,
                "host \(host.id) is \(host.power.rawValue), not \(expected): it cannot become \(power.rawValue)")
        }
        if power == .standby, !holding.isEmpty {
            throw ControlError(
                .transitionRefused,
                "host \(host.id) holds \(holding.count) guest(s) (\(holding.sorted().joined(separator: ", "))): it goes"
                    + " to standby only empty")
        }
        return host.power == power ? nil : power
    }
}
