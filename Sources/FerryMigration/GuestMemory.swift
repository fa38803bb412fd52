import FerryProtocol
import FerrySystem

/// One region of a guest's memory as mapped in this process: where the guest sees it
/// (guest-physical address) and where this process does (`base`, `size` bytes).
///
/// `@unchecked Sendable`: it is only an address; whoever maps the memory keeps it mapped while
/// the engine uses it.
public struct GuestMemoryRegion: @unchecked Sendable {
    /// Where the region starts in the guest's physical address space (a multiple of the page size).
    public var guestPhysicalAddress: UInt64
    /// Where it starts in this process (page-aligned).
    public var base: UnsafeMutableRawPointer
    /// Its length in bytes, a whole number of pages.
    public var size: Int

    public init(guestPhysicalAddress: UInt64, base: UnsafeMutableRawPointer, size: Int) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.base = base
        self.size = size
    }
}

/// All of a guest's memory, its pages numbered across its regions in order (region 0's pages
/// first), as the protocol numbers them (Protocol.md 3.4). The engine reads and writes pages
/// only through `address(ofPage:)`.
///
/// On the source a guest's adapter makes it over the guest's own mappings (any number of them,
/// anywhere in the process); on the destination the engine makes it over its image file, the
/// regions back to back, and hands it to `IncomingGuest.attach(memory:)`.
public struct GuestMemory: @unchecked Sendable {
    /// In page-numbering order (region 0's pages are pages 0…).
    public let regions: [GuestMemoryRegion]
    /// Bytes per page.
    public let pageSize: Int
    /// Pages in all regions together.
    public let pageCount: Int
    /// The first page of each region, then `pageCount`.
    let firstPages: [Int]
    /// Set when the regions lie back to back in this process (one mapping): then a page's
    /// address is one multiply-add, whatever the region.
    let contiguousBase: UnsafeMutableRawPointer?

    /// Checks that every region is a whole number of pages, page-aligned in both address
    /// spaces, and that no two overlap in the guest's physical address space.
    public init(regions: [GuestMemoryRegion], pageSize: Int) throws(MigrationError) {
        guard !regions.isEmpty, regions.count <= ProtocolLimits.maxMemoryRegions else {
            throw MigrationError(
                .configuration, "a guest has 1…\(ProtocolLimits.maxMemoryRegions) memory regions, not \(regions.count)",
                guest: .notHere)
        }
        var firstPages: [Int] = []
        var next = 0
        for region in regions {
            guard region.size > 0, region.size % pageSize == 0, region.guestPhysicalAddress % UInt64(pageSize) == 0,
                Int(bitPattern: region.base) % pageSize == 0
            else {
                throw MigrationError(
                    .configuration,
                    "memory region at guest-physical \(region.guestPhysicalAddress) of \(region.size) bytes is not a whole number of \(pageSize)-byte pages on page boundaries",
                    guest: .notHere)
            }
            firstPages.append(next)
            next += region.size / pageSize
        }
        let sorted = regions.sorted { $0.guestPhysicalAddress < $1.guestPhysicalAddress }
        for (low, high) in zip(sorted, sorted.dropFirst()) {
            let (end, overflow) = low.guestPhysicalAddress.addingReportingOverflow(UInt64(low.size))
            guard !overflow, end <= high.guestPhysicalAddress else {
                throw MigrationError(
                    .configuration,
                    "memory regions at guest-physical \(low.guestPhysicalAddress) and \(high.guestPhysicalAddress) overlap",
                    guest: .notHere)
            }
        }
        self.regions = regions
        self.pageSize = pageSize
        self.pageCount = next
        self.firstPages = firstPages + [next]
        let backToBack = zip(regions, regions.dropFirst()).allSatisfy { $0.base + $0.size == $1.base }
        contiguousBase = backToBack ? regions[0].base : nil
    }

    /// One region at guest-physical 0: a mapping of `size` bytes at `base`, both whole pages
    /// (a mapping always is; anything else is a programming error).
    public init(base: UnsafeMutableRawPointer, size: Int, pageSize: Int) {
        precondition(
            size > 0 && size % pageSize == 0 && Int(bitPattern: base) % pageSize == 0,
            "guest memory of \(size) bytes at \(base) is not whole \(pageSize)-byte pages")
        regions = [GuestMemoryRegion(guestPhysicalAddress: 0, base: base, size: size)]
        self.pageSize = pageSize
        pageCount = size / pageSize
        firstPages = [0, pageCount]
        contiguousBase = base
    }

    /// The regions of `layout` laid back to back in one mapping at `base` (the destination's
    /// image file holds the regions in page-numbering order).
    public init(layout: [MemoryRegionDescriptor], in base: UnsafeMutableRawPointer, pageSize: Int)
        throws(MigrationError)
    {
        var offset = 0
        var regions: [GuestMemoryRegion] = []
        for descriptor in layout {
            let size = Int(descriptor.pageCount) * pageSize
            regions.append(
                GuestMemoryRegion(
                    guestPhysicalAddress: descriptor.guestPhysicalAddress, base: base + offset, size: size))
            offset += size
        }
        try self.init(regions: regions, pageSize: pageSize)
    }

    /// Bytes in all regions together.
    public var size: Int { pageCount * pageSize }

    /// The layout `GUEST_CONFIG` carries.
    public var layout: [MemoryRegionDescriptor] {
        regions.map {
            MemoryRegionDescriptor(guestPhysicalAddress: $0.guestPhysicalAddress, pageCount: UInt64($0.size / pageSize))
        }
    }

    /// Where page `page` (numbered across the regions) is in this process.
    @inline(__always)
    public func address(ofPage page: Int) -> UnsafeMutableRawPointer {
        if let contiguousBase { return contiguousBase + page &* pageSize }
        let index = regionIndex(ofPage: page)
        return regions[index].base + (page - firstPages[index]) &* pageSize
    }

    /// The region holding `page`.
    func regionIndex(ofPage page: Int) -> Int {
        var low = 0
        var high = regions.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if firstPages[middle] <= page { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// The pages of region `index`.
    public func pages(ofRegion index: Int) -> Range<Int> { firstPages[index]..<firstPages[index + 1] }

    /// A write-protection tracker (userfaultfd or mprotect, `choice`) over every region, whose
    /// page numbers are this memory's.
    public func makeWriteTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String) {
        if let contiguousBase {
            return try DirtyTrackers.make(choice, base: contiguousBase, length: size, pageSize: pageSize)
        }
        var parts: [any DirtyTracker] = []
        var why = ""
        for region in regions {
            let made = try DirtyTrackers.make(choice, base: region.base, length: region.size, pageSize: pageSize)
            parts.append(made.tracker)
            why = made.why
        }
        return (
            RegionsDirtyTracker(parts: parts, firstPages: firstPages),
            "\(why) (one per memory region, \(regions.count) regions)"
        )
    }
}

/// Trackers of several regions as one, numbering pages as `GuestMemory` does.
final class RegionsDirtyTracker: DirtyTracker, @unchecked Sendable {
    let parts: [any DirtyTracker]
    let firstPages: [Int]

    init(parts: [any DirtyTracker], firstPages: [Int]) {
        self.parts = parts
        self.firstPages = firstPages
    }

    var kind: TrackerKind { parts[0].kind }
    func start() throws { for part in parts { try part.start() } }
    func startDeferred() throws { for part in parts { try part.startDeferred() } }

    func protect(pages: Range<Int>) throws {
        for (index, part) in parts.enumerated() {
            let region = firstPages[index]..<firstPages[index + 1]
            let overlap = pages.clamped(to: region)
            if !overlap.isEmpty {
                try part.protect(
                    pages: (overlap.lowerBound - region.lowerBound)..<(overlap.upperBound - region.lowerBound))
            }
        }
    }

    @discardableResult func harvest(into bitmap: inout DirtyBitmap) throws -> Int {
        var found = 0
        for (index, part) in parts.enumerated() {
            let first = firstPages[index]
            var local = DirtyBitmap(count: firstPages[index + 1] - first)
            found += try part.harvest(into: &local)
            local.forEachSetBit { bitmap.set(first + $0) }
        }
        return found
    }

    func stop() { for part in parts { part.stop() } }
}
