import FerryKVM
import Testing

/// Whether the KVM tests can run here: they carry `.enabled(if: KVMAvailability.usable,
/// KVMAvailability.whyNot)`, so that without a usable /dev/kvm they show as skipped, with the
/// reason, instead of passing.
enum KVMAvailability {
    static let reason: String? = KVMDevice.unavailableReason()
    static let usable = reason == nil
    static let whyNot = Comment(rawValue: "/dev/kvm is not usable here: \(reason ?? "")")
}
