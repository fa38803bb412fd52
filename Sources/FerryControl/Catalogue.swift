import FerryHostModel

/// What a guest is made of: vCPUs, memory and disk, and what a second of it running costs.
public struct Flavor: Sendable, Equatable, Hashable, Codable {
    public var name: String
    public var resources: Resources
    /// Price of one second of `running`, in millionths of the currency unit (integers, so a
    /// bill is a sum without rounding).
    public var pricePerSecondMicros: Int64

    public init(name: String, resources: Resources, pricePerSecondMicros: Int64) {
        self.name = name
        self.resources = resources
        self.pricePerSecondMicros = pricePerSecondMicros
    }

    enum CodingKeys: String, CodingKey {
        case name, resources
        case pricePerSecondMicros = "price_per_second_micros"
    }

    func validate() throws(ControlError) {
        try ControlNames.validate(name, "flavor")
        guard resources.vcpus >= 1, resources.memoryBytes >= 1, resources.diskBytes >= 0 else {
            throw ControlError(
                .invalidArgument, "flavor \(name): needs at least 1 vCPU and 1 byte of memory, got \(resources)")
        }
        guard pricePerSecondMicros >= 0 else {
            throw ControlError(.invalidArgument, "flavor \(name): the price per second is negative")
        }
    }
}

/// A guest program and the disk template its guests' disks are copied from.
public struct Image: Sendable, Equatable, Hashable, Codable {
    public var name: String
    /// The built-in guest or the KVM guest (FerryHostModel's kinds).
    public var kind: GuestSpecification.Kind
    /// The template's path on every host (the agent copies it sparsely into the guest's disk).
    public var diskTemplatePath: String

    public init(name: String, kind: GuestSpecification.Kind, diskTemplatePath: String) {
        self.name = name
        self.kind = kind
        self.diskTemplatePath = diskTemplatePath
    }

    enum CodingKeys: String, CodingKey {
        case name, kind
        case diskTemplatePath = "disk_template_path"
    }

    func validate() throws(ControlError) {
        try ControlNames.validate(name, "image")
        guard diskTemplatePath.hasPrefix("/") else {
            throw ControlError(
                .invalidArgument, "image \(name): the disk template path must be absolute, got \"\(diskTemplatePath)\"")
        }
    }
}

/// How much a project's guests may hold together (guests in states that hold capacity).
public struct Quota: Sendable, Equatable, Hashable, Codable {
    public var guests: Int
    public var resources: Resources

    public init(guests: Int, resources: Resources) {
        self.guests = guests
        self.resources = resources
    }

    func validate(_ project: String) throws(ControlError) {
        guard guests >= 0, resources.isNonNegative else {
            throw ControlError(.invalidArgument, "project \(project): a quota is never negative (\(self))")
        }
    }
}

/// A project: who guests belong to, and its quota.
public struct Project: Sendable, Equatable, Hashable, Codable {
    public var name: String
    public var quota: Quota

    public init(name: String, quota: Quota) {
        self.name = name
        self.quota = quota
    }
}

/// What a project's guests hold now (states that hold capacity), as checked against its quota.
public struct ProjectUsage: Sendable, Equatable {
    public var guests: Int
    public var resources: Resources

    public init(guests: Int, resources: Resources) {
        self.guests = guests
        self.resources = resources
    }
}

enum ControlNames {
    /// Catalogue and host names: 1…63 characters of a-z, 0-9, '-', '.' and '_'.
    static func validate(_ name: String, _ what: String) throws(ControlError) {
        let allowed = name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
        }
        guard (1...63).contains(name.utf8.count), allowed else {
            throw ControlError(
                .invalidArgument, "a \(what) name has 1 to 63 characters of a-z, 0-9, '-', '.', '_': \"\(name)\"")
        }
    }
}
