import FerryGuestMigration
import FerryKVMMigration
import FerryMigration

extension GuestKindRegistry {
    /// The guest kinds `ferry` receives: its built-in guest and its KVM guest.
    static var ferry: GuestKindRegistry { GuestKindRegistry([BuiltinGuestKind(), KVMGuestKind()]) }
}
