import FerryHostModel
import Foundation
import Testing

@testable import FerryControl

/// A create is refused up front when no host could define or run the guest: the flavor's vCPUs,
/// memory and disk must fit the image's kind (the KVM guest needs 4 MiB of memory, the built-in
/// 1 MiB), and a KVM guest needs a registered host with KVM.
@Suite struct ControlRulesTests {
    static let builtin = Image(name: "b", kind: .builtin, diskTemplatePath: "/t.raw")
    static let kvm = Image(name: "k", kind: .kvm, diskTemplatePath: "/t.raw")

    static func flavor(vcpus: Int = 1, memoryMiB: Int, diskBytes: Int = 4 << 20) -> Flavor {
        Flavor(
            name: "f", resources: Resources(vcpus: vcpus, memoryBytes: memoryMiB << 20, diskBytes: diskBytes),
            pricePerSecondMicros: 1)
    }

    static func host(_ id: String, kvm: Bool) -> HostRecord {
        HostRecord(
            id: id, address: "http://10.0.0.2:7460", capacity: Resources(vcpus: 4, memoryBytes: 1 << 30, diskBytes: 0),
            kvm: kvm, health: .healthy, lastHeartbeat: Date(), registeredAt: Date())
    }

    static func refusal(_ flavor: Flavor, _ image: Image, hosts: [HostRecord] = [host("k", kvm: true)]) -> String? {
        do {
            try ControlRules.checkRunnable(flavor, image, hosts: hosts)
            return nil
        } catch {
            #expect(error.code == .invalidArgument)
            return error.message
        }
    }

    @Test func aFlavorMustFitTheImagesKind() {
        #expect(Self.refusal(Self.flavor(memoryMiB: 16), Self.kvm) == nil)
        #expect(Self.refusal(Self.flavor(memoryMiB: 4), Self.kvm) == nil)
        #expect(Self.refusal(Self.flavor(memoryMiB: 2), Self.builtin) == nil)
        let small = Self.refusal(Self.flavor(memoryMiB: 2), Self.kvm)
        #expect(small?.contains("memory 2097152 bytes (a multiple of 4096 from 4 MiB") == true, "\(small ?? "")")
        #expect(Self.refusal(Self.flavor(vcpus: 65, memoryMiB: 16), Self.builtin)?.contains("65 vCPUs") == true)
        #expect(Self.refusal(Self.flavor(memoryMiB: 16, diskBytes: 0), Self.kvm)?.contains("disk 0 bytes") == true)
        #expect(Self.refusal(Self.flavor(memoryMiB: 16, diskBytes: (4 << 20) + 1), Self.builtin) != nil)
    }

    /// A KVM guest needs a registered host with KVM (whether it takes guests now is the
    /// scheduler's matter); a built-in guest does not. A flavor too small is said first.
    @Test func aKVMGuestNeedsARegisteredHostWithKVM() {
        let plain = [Self.host("p1", kvm: false), Self.host("p2", kvm: false)]
        let none = Self.refusal(Self.flavor(memoryMiB: 16), Self.kvm, hosts: plain)
        #expect(none?.contains("none of the 2 registered hosts reports a usable /dev/kvm") == true, "\(none ?? "")")
        #expect(none?.contains("register a host with KVM") == true)
        #expect(Self.refusal(Self.flavor(memoryMiB: 16), Self.kvm, hosts: [])?.contains("none of the 0") == true)
        #expect(Self.refusal(Self.flavor(memoryMiB: 16), Self.builtin, hosts: plain) == nil)
        #expect(Self.refusal(Self.flavor(memoryMiB: 16), Self.kvm, hosts: plain + [Self.host("k", kvm: true)]) == nil)
        #expect(Self.refusal(Self.flavor(memoryMiB: 2), Self.kvm, hosts: plain)?.contains("from 4 MiB") == true)
    }

    /// The agent's own check says the same (it refuses a KVM guest under 4 MiB with 422).
    @Test func theHostModelRefusesATooSmallKVMGuest() throws {
        var spec = GuestSpecification(name: try GuestName("k"), kind: .kvm, memoryBytes: 2 << 20)
        #expect(throws: HostModelError.self) { try spec.validate() }
        spec.kind = .builtin
        try spec.validate()
        spec.kind = .kvm
        spec.memoryBytes = 4 << 20
        try spec.validate()
    }
}
