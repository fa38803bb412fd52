/// One region of guest memory as `GUEST_CONFIG` describes it: where it sits in the guest's
/// physical address space and how many pages it holds. Pages are numbered across regions in
/// the order the regions are listed (region 0's pages first).
public struct MemoryRegionDescriptor: Equatable, Sendable {
    public var guestPhysicalAddress: UInt64
    public var pageCount: UInt64

    public init(guestPhysicalAddress: UInt64, pageCount: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.pageCount = pageCount
    }
}

/// `GUEST_CONFIG` (source → destination), right after `ACCEPT`: the guest's memory layout and
/// its "hardware" besides memory and device state (Protocol.md 3.4).
public struct GuestConfig: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.guestConfig
    /// Largest `attachment_length`: 2^40 bytes (1 TiB).
    public static let maxAttachmentLength: UInt64 = 1 << 40

    /// The workload seed.
    public var seed: UInt64
    /// `.none` (all zero) when the guest has no network interface.
    public var guestMAC: MACAddress
    /// The IPv4 address as a number whose most significant byte is the first octet
    /// (10.0.0.2 is 0x0A00_0002); it travels in network byte order (0A 00 00 02). 0: none.
    public var guestIPv4: UInt32
    /// The workload spec as given to `--workload` (≤ 1024 UTF-8 bytes).
    public var workload: String
    /// Length of the guest kind's opaque attachment, which follows in `GUEST_ATTACHMENT` frames
    /// (Protocol.md 3.25); 0: none. Built-in guest: the trace file's length.
    public var attachmentLength: UInt64
    /// XXH3-64 (seed 0) of the whole attachment; 0 when there is none.
    public var attachmentHash: UInt64
    /// The guest's memory regions (1…64), in page-numbering order.
    public var regions: [MemoryRegionDescriptor]

    public init(
        seed: UInt64, guestMAC: MACAddress = .none, guestIPv4: UInt32 = 0,
        workload: String, attachmentLength: UInt64 = 0, attachmentHash: UInt64 = 0,
        regions: [MemoryRegionDescriptor]
    ) {
        self.regions = regions
        self.seed = seed
        self.guestMAC = guestMAC
        self.guestIPv4 = guestIPv4
        self.workload = workload
        self.attachmentLength = attachmentLength
        self.attachmentHash = attachmentHash
    }

    public func validate() throws(ProtocolError) {
        if regions.isEmpty || regions.count > ProtocolLimits.maxMemoryRegions {
            throw invalid(
                "GUEST_CONFIG", "region_count \(regions.count) is outside 1…\(ProtocolLimits.maxMemoryRegions)")
        }
        for region in regions
        where region.pageCount == 0 || region.guestPhysicalAddress % UInt64(ProtocolLimits.minPageSize) != 0 {
            throw invalid(
                "GUEST_CONFIG",
                "a memory region at \(region.guestPhysicalAddress) of \(region.pageCount) pages: regions hold at least one page and start on a 4096-byte boundary"
            )
        }
        if workload.utf8.count > StringLimits.workload {
            throw ProtocolError(
                .tooLarge,
                "GUEST_CONFIG 'workload' is \(workload.utf8.count) bytes, the limit is \(StringLimits.workload)")
        }
        if attachmentLength > Self.maxAttachmentLength {
            throw ProtocolError(
                .tooLarge,
                "GUEST_CONFIG attachment_length is \(attachmentLength) bytes, the limit is \(Self.maxAttachmentLength) (1 TiB)"
            )
        }
        if attachmentLength == 0 && attachmentHash != 0 {
            throw invalid("GUEST_CONFIG", "attachment_xxh3 must be 0 when attachment_length is 0")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.reserveCapacity(out.count + 48 + 16 * regions.count + workload.utf8.count)
        out.appendLittleEndian(seed)
        out.append(contentsOf: guestMAC.octets)
        out.appendZeros(2)
        out.appendLittleEndian(guestIPv4.byteSwapped)  // big-endian (network order) on the wire
        out.appendLittleEndian(UInt16(regions.count))
        out.appendZeros(2)
        for region in regions {
            out.appendLittleEndian(region.guestPhysicalAddress)
            out.appendLittleEndian(region.pageCount)
        }
        out.appendStr16(workload)
        out.appendLittleEndian(attachmentLength)
        out.appendLittleEndian(attachmentHash)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "GUEST_CONFIG")
        seed = try reader.read(UInt64.self, "seed")
        guestMAC = MACAddress(octets: try reader.readBytes(6, "guest_mac"))
        try reader.reserved(2)
        guestIPv4 = try reader.read(UInt32.self, "guest_ipv4").byteSwapped
        let regionCount = Int(try reader.read(UInt16.self, "region_count"))
        try reader.reserved(2)
        if regionCount < 1 || regionCount > ProtocolLimits.maxMemoryRegions {
            throw invalid("GUEST_CONFIG", "region_count \(regionCount) is outside 1…\(ProtocolLimits.maxMemoryRegions)")
        }
        regions = []
        for _ in 0..<regionCount {
            regions.append(
                MemoryRegionDescriptor(
                    guestPhysicalAddress: try reader.read(UInt64.self, "guest_physical_address"),
                    pageCount: try reader.read(UInt64.self, "page_count")))
        }
        workload = try reader.str16("workload", limit: StringLimits.workload)
        attachmentLength = try reader.read(UInt64.self, "attachment_length")
        attachmentHash = try reader.read(UInt64.self, "attachment_xxh3")
        try reader.finish()
        try validate()
    }
}
