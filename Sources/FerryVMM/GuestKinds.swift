import FerryGuestMigration
import FerryKVMMigration
import FerryMigration

extension GuestKindRegistry {
    /// The guest kinds Ferry receives (`ferry receive`, `ferry vmm --incoming`, the agent): its
    /// built-in guest and its KVM guest.
    public static var ferry: GuestKindRegistry { GuestKindRegistry([BuiltinGuestKind(), KVMGuestKind()]) }
}
