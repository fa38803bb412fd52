/// Guest-physical layout of Ferry's KVM guest; mirrors `Tools/kvm-guest/layout.h`.
///
/// Guest memory is one memory slot at guest-physical 0 backed by the mapped image, so a
/// guest-physical address is an offset into the image. The low 2 MiB are the VMM's: GDT, page
/// tables (identity map with 2 MiB pages), per-vCPU status records, the program, the stacks.
/// Everything above is the guest's working area. The guest talks to the VMM through an MMIO
/// page at 64 GiB, above any guest memory.
public enum KVMGuestLayout {
    public static let pageSize = 4096
    static let gdt = 0x1000
    static let pml4 = 0x2000
    static let pdpt = 0x3000
    static let pageDirectories = 0x4000
    /// One page directory maps 1 GiB; there is room for 64 of them below the status records.
    public static let maxMemory = 64 << 30
    static let statusRecords = 0x50000
    static let statusRecordSize = 64
    public static let programBase = 0x100000
    static let programLimit = 0x180000
    static let stackTop = 0x200000
    static let stackSize = 0x2000
    /// First byte of the working area.
    public static let workBase = 0x200000
    /// Smallest guest memory: the reserved 2 MiB plus a 2 MiB working area.
    public static let minMemory = 4 << 20
    public static let maxVCPUs = 64

    /// The VMM's MMIO page: no memory behind it, every access exits to the VMM (layout.h).
    static let mmioBase: UInt64 = 0x10_0000_0000
    static let mmioDirectory = pageDirectories + 64 * pageSize
    // MMIO register offsets (layout.h).
    static let regParamSelect: UInt64 = 0x00
    static let regParamData: UInt64 = 0x04
    static let regBudget: UInt64 = 0x08
    static let regLine: UInt64 = 0x0c
    static let regHalt: UInt64 = 0x10
    static let regDiskRequest: UInt64 = 0x14
    static let regLoad: UInt64 = 0x18
    static let budgetFinished: UInt32 = 0xffff_ffff
    static let budgetShutdown: UInt32 = 0xffff_fffe
    static let lineCapacity = 124

    // Parameter indices (32-bit halves).
    static let paramSeed: UInt32 = 0
    static let paramWorkFirst: UInt32 = 2
    static let paramWorkPages: UInt32 = 4
    static let paramPrintInterval: UInt32 = 6
    static let paramDiskSectors: UInt32 = 8
    static let paramJournalInterval: UInt32 = 10
    static let paramTSCHertz: UInt32 = 12

    // GDT selectors.
    static let userCodeSelector: UInt16 = 0x1b
    static let userDataSelector: UInt16 = 0x23
    static let gdtEntries = 5

    public static func workPages(memorySize: Int) -> Int { (memorySize - workBase) / pageSize }
    static func stackTop(vcpu: Int) -> Int { stackTop - vcpu * stackSize }
    static func statusRecord(vcpu: Int) -> Int { statusRecords + vcpu * statusRecordSize }

    /// Writes the GDT, page tables and the program into guest memory and zeroes the status
    /// records and stacks; returns the byte ranges written (the VMM's writes, for the dirty log).
    static func prepare(memory: UnsafeMutableRawPointer, size: Int, program: [UInt8]) -> [Range<Int>] {
        precondition(size >= minMemory && size <= maxMemory && size % pageSize == 0)
        precondition(program.count <= programLimit - programBase)
        var written: [Range<Int>] = []
        // GDT: null, kernel code and data (DPL 0), user code and data (DPL 3): 64-bit code
        // (L, P, execute/read, accessed), data (P, read/write, accessed, 4 GiB, D/B).
        let descriptors: [UInt64] = [
            0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff,
            0x00af_fb00_0000_ffff, 0x00cf_f300_0000_ffff,
        ]
        for (index, descriptor) in descriptors.enumerated() {
            memory.storeBytes(of: descriptor.littleEndian, toByteOffset: gdt + index * 8, as: UInt64.self)
        }
        written.append(gdt..<(gdt + pageSize))
        // Identity map: PML4[0] → PDPT; PDPT[g] → page directory g; 2 MiB pages. Every level
        // present, writable, user (the program runs at CPL 3), accessed; pages also dirty, so
        // no walk ever writes the page tables.
        let gibibytes = (size + (1 << 30) - 1) >> 30
        memset(memory + pml4, 0, pageSize)
        memset(memory + pdpt, 0, pageSize)
        memory.storeBytes(of: UInt64(pdpt | 0x27).littleEndian, toByteOffset: pml4, as: UInt64.self)
        for g in 0..<gibibytes {
            let directory = pageDirectories + g * pageSize
            memory.storeBytes(of: UInt64(directory | 0x27).littleEndian, toByteOffset: pdpt + g * 8, as: UInt64.self)
            for entry in 0..<512 {
                let physical = UInt64(g) << 30 | UInt64(entry) << 21
                memory.storeBytes(
                    of: (physical | 0xe7).littleEndian, toByteOffset: directory + entry * 8, as: UInt64.self)
            }
        }
        // The MMIO page: PDPT[64] → its own directory, whose first 2 MiB page is the MMIO window.
        memset(memory + mmioDirectory, 0, pageSize)
        memory.storeBytes(of: UInt64(mmioDirectory | 0x27).littleEndian, toByteOffset: pdpt + 64 * 8, as: UInt64.self)
        memory.storeBytes(of: (mmioBase | 0xe7).littleEndian, toByteOffset: mmioDirectory, as: UInt64.self)
        written.append(pml4..<(mmioDirectory + pageSize))
        memset(memory + statusRecords, 0, maxVCPUs * statusRecordSize)
        written.append(statusRecords..<(statusRecords + maxVCPUs * statusRecordSize))
        memset(memory + programBase, 0, stackTop - programBase)
        program.withUnsafeBytes {
            memory.advanced(by: programBase).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
        }
        written.append(programBase..<stackTop)
        return written
    }

    /// The step a vCPU last published (it writes its status record before each budget request).
    static func publishedStep(memory: UnsafeRawPointer, vcpu: Int) -> UInt64 {
        UInt64(littleEndian: memory.load(fromByteOffset: statusRecord(vcpu: vcpu), as: UInt64.self))
    }
}

@inline(__always)
private func memset(_ pointer: UnsafeMutableRawPointer, _ value: Int32, _ count: Int) {
    pointer.initializeMemory(as: UInt8.self, repeating: UInt8(value), count: count)
}
