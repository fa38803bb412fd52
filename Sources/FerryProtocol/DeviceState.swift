/// One typed, versioned piece of a guest's state besides its memory (Protocol.md 3.8): a vCPU's
/// registers, or the state of a device (a disk controller, a network card) that only the guest
/// kind understands. The engine carries the body opaquely.
public struct DeviceStateSection: Equatable, Sendable {
    /// What the section holds. `vcpu` (1): a vCPU's state, `version` = `HELLO.cpu_state_format`,
    /// `instance` = the vCPU's index. 2…0x7FFF: defined by the guest kind, mandatory (a receiver
    /// that does not know one fails the migration). Bit 15 set: optional (a receiver that does
    /// not know it ignores it). 0 is invalid.
    public var kind: UInt16
    /// The layout of `body`, chosen by whoever defines `kind`; never 0.
    public var version: UInt16
    /// Which one of several of the same kind (a vCPU index, a device number).
    public var instance: UInt32
    public var body: [UInt8]

    /// Kind 1: a vCPU's registers.
    public static let vcpu: UInt16 = 1
    /// Bit 15 of `kind`: the section may be ignored by a receiver that does not know it.
    public static let optionalBit: UInt16 = 0x8000
    static let headerSize = 16

    public init(kind: UInt16, version: UInt16, instance: UInt32, body: [UInt8]) {
        self.kind = kind
        self.version = version
        self.instance = instance
        self.body = body
    }

    public var isOptional: Bool { kind & Self.optionalBit != 0 }
}

/// `DEVICE_STATE` (source → destination), during blackout: the vCPUs' state and any device
/// state, as sections (Protocol.md 3.8). vCPU sections come first, one per vCPU in index order.
public struct DeviceState: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.deviceState
    static let headerSize = 8

    public var sections: [DeviceStateSection]

    public init(sections: [DeviceStateSection]) {
        self.sections = sections
    }

    /// The vCPU sections' bodies, vCPU 0 first.
    public var vcpuBodies: [[UInt8]] { sections.filter { $0.kind == DeviceStateSection.vcpu }.map(\.body) }

    /// Sections of other kinds (device state), in the order sent.
    public var deviceSections: [DeviceStateSection] { sections.filter { $0.kind != DeviceStateSection.vcpu } }

    public func validate() throws(ProtocolError) {
        if sections.isEmpty || sections.count > ProtocolLimits.maxDeviceSections {
            throw invalid(
                "DEVICE_STATE", "section_count \(sections.count) is outside 1…\(ProtocolLimits.maxDeviceSections)")
        }
        var vcpus = 0
        var seenOther = false
        var keys = Set<UInt64>()
        var bytes = Self.headerSize
        for section in sections {
            if section.kind == 0 || section.kind == DeviceStateSection.optionalBit {
                throw invalid("DEVICE_STATE", "a section has kind \(section.kind)")
            }
            if section.version == 0 { throw invalid("DEVICE_STATE", "section of kind \(section.kind) has version 0") }
            if section.kind == DeviceStateSection.vcpu {
                if seenOther { throw invalid("DEVICE_STATE", "a vCPU section follows a device section") }
                if section.instance != UInt32(vcpus) {
                    throw invalid("DEVICE_STATE", "vCPU section \(vcpus) names vCPU \(section.instance)")
                }
                if section.version != sections[0].version {
                    throw invalid(
                        "DEVICE_STATE", "vCPU sections have versions \(sections[0].version) and \(section.version)")
                }
                vcpus += 1
            } else {
                seenOther = true
            }
            if !keys.insert(UInt64(section.kind) << 32 | UInt64(section.instance)).inserted {
                throw invalid("DEVICE_STATE", "two sections of kind \(section.kind), instance \(section.instance)")
            }
            bytes += Self.sectionHeaderSize + section.body.count
        }
        if vcpus < 1 || vcpus > ProtocolLimits.maxVCPUs {
            throw invalid("DEVICE_STATE", "holds \(vcpus) vCPU sections; 1…\(ProtocolLimits.maxVCPUs) expected")
        }
        if bytes > FrameType.deviceState.maxPayload {
            throw ProtocolError(
                .tooLarge,
                "DEVICE_STATE needs \(bytes) bytes, more than the \(FrameType.deviceState.maxPayload)-byte payload limit"
            )
        }
    }

    static var sectionHeaderSize: Int { DeviceStateSection.headerSize }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(UInt16(sections.count))
        out.appendZeros(6)
        for section in sections {
            out.appendLittleEndian(section.kind)
            out.appendLittleEndian(section.version)
            out.appendLittleEndian(section.instance)
            out.appendLittleEndian(UInt32(section.body.count))
            out.appendZeros(4)
            out.append(contentsOf: section.body)
        }
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DEVICE_STATE")
        let count = Int(try reader.read(UInt16.self, "section_count"))
        if count < 1 || count > ProtocolLimits.maxDeviceSections {
            throw invalid("DEVICE_STATE", "section_count \(count) is outside 1…\(ProtocolLimits.maxDeviceSections)")
        }
        try reader.reserved(6)
        sections = []
        sections.reserveCapacity(count)
        for _ in 0..<count {
            let kind = try reader.read(UInt16.self, "kind")
            let version = try reader.read(UInt16.self, "version")
            let instance = try reader.read(UInt32.self, "instance")
            let length = Int(try reader.read(UInt32.self, "length"))
            try reader.reserved(4)
            if length > reader.remaining {
                throw ProtocolError(
                    .truncated, "DEVICE_STATE section of kind \(kind) needs \(length) bytes, \(reader.remaining) left")
            }
            sections.append(
                DeviceStateSection(
                    kind: kind, version: version, instance: instance,
                    body: try reader.readBytes(length, "body")))
        }
        try reader.finish()
        try validate()
    }
}
