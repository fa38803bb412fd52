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
    init(listen: Endpoint, imagePath: String, force: Bool = false, runFor: Double = 0,
         announceInterface: String? = nil, guestMAC: MACAddress? = nil, guestIPv4: IPv4Address? = nil,
         acceptTimeoutMs: Int? = nil, receiveTimeoutMs: Int = 60_000, name: String = "ferry-destination",
         preallocateBytes: Int? = nil, resumeTimeout: Double = 30) {
        self.init(listen: listen, imagePath: imagePath, force: force, runFor: runFor, announceInterface: announceInterface,
                  guestMAC: guestMAC, guestIPv4: guestIPv4, acceptTimeoutMs: acceptTimeoutMs, receiveTimeoutMs: receiveTimeoutMs,
                  name: name, preallocateBytes: preallocateBytes, resumeTimeout: resumeTimeout, guestKinds: .ferry)
    }
}

extension DestinationResult {
    /// The KVM guest's console lines here.
    var kvmConsole: [KVMConsoleLine] { console.map { KVMConsoleLine(vcpu: $0.vcpu, text: $0.text) } }
}
