import FerryKVM

/// Why the KVM tests cannot run here, or nil when /dev/kvm opens with what they need. Tests
/// that need KVM print this and return (Swift Testing has no runtime skip that shows a reason
/// in every runner, so each test says it in the output).
enum KVMAvailability {
    static let reason: String? = KVMDevice.unavailableReason()

    /// True when the test can run; otherwise prints why it is skipped.
    static func check(_ test: String) -> Bool {
        guard let reason else { return true }
        print("SKIPPED \(test): /dev/kvm is not usable here: \(reason)")
        return false
    }
}
