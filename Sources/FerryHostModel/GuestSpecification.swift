/// What a guest is, independent of where it runs: the part of a guest that an inventory stores,
/// a `ferry vmm` process is started with, and a migration carries to the next host.
public struct GuestSpecification: Sendable, Codable, Equatable {
    /// The guest kinds the host runs.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// Ferry's built-in guest: vCPU threads writing memory by a workload (no KVM needed).
        case builtin
        /// Ferry's KVM guest program on Ferry's own VMM (needs /dev/kvm).
        case kvm
    }

    public var name: GuestName
    public var kind: Kind
    public var vcpus: Int
    public var memoryBytes: Int
    public var disks: [DiskSpecification]
    /// Locally administered unicast MAC, `02:xx:xx:xx:xx:xx`; announced by gratuitous ARP after a move.
    public var mac: String?
    public var ipv4: String?
    public var networkID: String?
    /// Percent of one host CPU the guest's vCPUs may use together (100 = one core); nil: no limit.
    public var cpuLimitPercent: Int?
    /// The built-in guest's workload in `ferry send --workload` syntax; nil: the kind's default.
    public var workload: String?
    public var seed: UInt64

    public init(
        name: GuestName, kind: Kind, vcpus: Int = 1, memoryBytes: Int, disks: [DiskSpecification] = [],
        mac: String? = nil, ipv4: String? = nil, networkID: String? = nil, cpuLimitPercent: Int? = nil,
        workload: String? = nil, seed: UInt64 = 1
    ) {
        self.name = name
        self.kind = kind
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.disks = disks
        self.mac = mac
        self.ipv4 = ipv4
        self.networkID = networkID
        self.cpuLimitPercent = cpuLimitPercent
        self.workload = workload
        self.seed = seed
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, vcpus, disks, mac, ipv4, workload, seed
        case memoryBytes = "memory_bytes"
        case networkID = "network_id"
        case cpuLimitPercent = "cpu_limit_percent"
    }

    /// Decodes the API's JSON; `disks` may be left out (no disks), every other required field
    /// must be there.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(GuestName.self, forKey: .name)
        kind = try container.decode(Kind.self, forKey: .kind)
        vcpus = try container.decode(Int.self, forKey: .vcpus)
        memoryBytes = try container.decode(Int.self, forKey: .memoryBytes)
        disks = try container.decodeIfPresent([DiskSpecification].self, forKey: .disks) ?? []
        mac = try container.decodeIfPresent(String.self, forKey: .mac)
        ipv4 = try container.decodeIfPresent(String.self, forKey: .ipv4)
        networkID = try container.decodeIfPresent(String.self, forKey: .networkID)
        cpuLimitPercent = try container.decodeIfPresent(Int.self, forKey: .cpuLimitPercent)
        workload = try container.decodeIfPresent(String.self, forKey: .workload)
        seed = try container.decode(UInt64.self, forKey: .seed)
    }

    public static let memoryRange = (1 << 20)...(64 << 30)
    public static let vcpuRange = 1...64

    /// Checks every field; the error names the first one out of range, as the API spells it.
    public func validate() throws(HostModelError) {
        guard Self.vcpuRange.contains(vcpus) else {
            throw HostModelError(field: "vcpus", "1 to 64 vCPUs, got \(vcpus)")
        }
        guard kind.memoryRange.contains(memoryBytes), memoryBytes % 4096 == 0 else {
            throw HostModelError(
                field: "memory_bytes",
                "a multiple of 4096 from \(kind.memoryRange.lowerBound >> 20) MiB to 64 GiB for a \(kind.rawValue) guest,"
                    + " got \(memoryBytes)")
        }
        var seen = Set<String>()
        for (index, disk) in disks.enumerated() {
            try disk.validate(field: "disks[\(index)]")
            guard seen.insert(disk.name).inserted else {
                throw HostModelError(field: "disks[\(index)].name", "two disks are named \"\(disk.name)\"")
            }
        }
        if let mac { try Self.validateMAC(mac) }
        if let ipv4 { try Self.validateIPv4(ipv4) }
        if let cpuLimitPercent, !(1...(100 * vcpus)).contains(cpuLimitPercent) {
            throw HostModelError(
                field: "cpu_limit_percent", "1 to \(100 * vcpus) (100 per vCPU), got \(cpuLimitPercent)")
        }
    }

    static func validateMAC(_ text: String) throws(HostModelError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        guard parts.count == 6, bytes.count == 6 else {
            throw HostModelError(field: "mac", "six hex pairs separated by ':', got \"\(text)\"")
        }
        guard bytes[0] & 0x01 == 0 else {
            throw HostModelError(field: "mac", "a guest's MAC is unicast (first byte even), got \"\(text)\"")
        }
    }

    static func validateIPv4(_ text: String) throws(HostModelError) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && UInt8($0) != nil }) else {
            throw HostModelError(field: "ipv4", "a dotted IPv4 address such as 10.0.0.5, got \"\(text)\"")
        }
    }
}

extension GuestSpecification.Kind {
    /// The memory a guest of this kind runs with: the built-in guest's from 1 MiB, the KVM
    /// guest's from 4 MiB (the VMM's low 2 MiB and a working area of 2 MiB: FerryKVM's
    /// `KVMGuestLayout.minMemory`); both up to 64 GiB.
    public var memoryRange: ClosedRange<Int> {
        switch self {
        case .builtin: GuestSpecification.memoryRange
        case .kvm: (4 << 20)...GuestSpecification.memoryRange.upperBound
        }
    }
}

/// One raw, sparse disk file of a guest.
public struct DiskSpecification: Sendable, Codable, Equatable {
    /// The disk's name within its guest (`root`, `data`): same rules as a guest name.
    public var name: String
    public var sizeBytes: Int
    /// Where the file is; nil: the agent's state directory (`disks/GUEST-NAME.raw`). A path on
    /// storage that both hosts see makes the disk shared (live migration moves no disk bytes).
    public var path: String?
    /// A raw image the disk starts as: when the agent creates the disk's file, it copies the
    /// template's data extents into it (holes stay holes) and sizes it to `sizeBytes`, which must
    /// be at least the template's size. Only read at creation; a file that exists is used as it is.
    public var template: String?

    public init(name: String, sizeBytes: Int, path: String? = nil, template: String? = nil) {
        self.name = name
        self.sizeBytes = sizeBytes
        self.path = path
        self.template = template
    }

    enum CodingKeys: String, CodingKey {
        case name, path, template
        case sizeBytes = "size_bytes"
    }

    public static let sizeRange = (1 << 20)...(1 << 42)

    func validate(field: String) throws(HostModelError) {
        do { _ = try GuestName(name) } catch {
            throw HostModelError(field: "\(field).name", error.message)
        }
        guard Self.sizeRange.contains(sizeBytes), sizeBytes % 512 == 0 else {
            throw HostModelError(
                field: "\(field).size_bytes", "a multiple of 512 from 1 MiB to 4 TiB, got \(sizeBytes)")
        }
        if let path, !path.hasPrefix("/") {
            throw HostModelError(field: "\(field).path", "an absolute path, got \"\(path)\"")
        }
        if let template, !template.hasPrefix("/") {
            throw HostModelError(field: "\(field).template", "an absolute path, got \"\(template)\"")
        }
    }
}
