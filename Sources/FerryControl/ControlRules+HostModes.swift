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
}
