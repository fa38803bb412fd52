import FerryGuest
import FerryKVM
import FerryKVMMigration
import FerryMigration
import FerryProtocol
import FerryTransport

extension GuestKindRegistry {
    /// The KVM guest kind (the built-in one is not linked into these tests).
    static var ferry: GuestKindRegistry { GuestKindRegistry([KVMGuestKind()]) }
}

extension DestinationOptions {
    /// The options with Ferry's own guest kinds registered.
    init(
        listen: Endpoint, imagePath: String, force: Bool = false, runFor: Duration = .zero,
        announceInterface: String? = nil, guestMAC: MACAddress? = nil, guestIPv4: IPv4Address? = nil,
        acceptTimeout: Duration? = nil, receiveTimeout: Duration = .seconds(60), name: String = "ferry-destination",
        preallocateBytes: Int? = nil, resumeTimeout: Duration = .seconds(30)
    ) {
        self.init(
            listen: listen, imagePath: imagePath, force: force, runFor: runFor, announceInterface: announceInterface,
            guestMAC: guestMAC, guestIPv4: guestIPv4, acceptTimeout: acceptTimeout, receiveTimeout: receiveTimeout,
            name: name, preallocateBytes: preallocateBytes, resumeTimeout: resumeTimeout, guestKinds: .ferry)
    }
}

extension DestinationResult {
    /// The KVM guest's console lines here.
    var kvmConsole: [KVMConsoleLine] { console.map { KVMConsoleLine(vcpu: $0.vcpu, text: $0.text) } }
}
