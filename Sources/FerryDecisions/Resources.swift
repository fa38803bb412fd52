/// An amount of a host's resources: what a host has, what a flavor asks for, what a project's
/// guests hold. Whole units (vCPUs, bytes), so sums and comparisons are exact.
public struct Resources: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    public var vcpus: Int
    public var memoryBytes: Int
    public var diskBytes: Int

    public init(vcpus: Int, memoryBytes: Int, diskBytes: Int) {
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
    }

    public static let zero = Resources(vcpus: 0, memoryBytes: 0, diskBytes: 0)

    /// Whether `request` fits in this amount, in every dimension.
    public func fits(_ request: Resources) -> Bool {
        request.vcpus <= vcpus && request.memoryBytes <= memoryBytes && request.diskBytes <= diskBytes
    }

    public static func + (lhs: Resources, rhs: Resources) -> Resources {
        Resources(
            vcpus: lhs.vcpus + rhs.vcpus, memoryBytes: lhs.memoryBytes + rhs.memoryBytes,
            diskBytes: lhs.diskBytes + rhs.diskBytes)
    }

    public static func - (lhs: Resources, rhs: Resources) -> Resources {
        Resources(
            vcpus: lhs.vcpus - rhs.vcpus, memoryBytes: lhs.memoryBytes - rhs.memoryBytes,
            diskBytes: lhs.diskBytes - rhs.diskBytes)
    }

    /// Every dimension at least zero.
    public var isNonNegative: Bool { vcpus >= 0 && memoryBytes >= 0 && diskBytes >= 0 }

    public var description: String { "\(vcpus) vCPUs, \(memoryBytes) bytes of memory, \(diskBytes) bytes of disk" }

    enum CodingKeys: String, CodingKey {
        case vcpus
        case memoryBytes = "memory_bytes"
        case diskBytes = "disk_bytes"
    }
}
