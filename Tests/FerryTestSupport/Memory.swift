import Glibc

/// Anonymous memory for a test guest (zero-filled, page-aligned), unmapped on deinit. Private by
/// default; `shared` maps it MAP_SHARED (as KVM guests' memory is).
public final class AnonymousMemory: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int

    public init(size: Int, shared: Bool = false) {
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0)
        precondition(p != MAP_FAILED, "mmap(\(size)) failed: errno \(errno)")
        base = p!
        self.size = size
    }

    /// Shared memory of `mebibytes` MiB.
    public convenience init(mebibytes: Int) {
        self.init(size: mebibytes << 20, shared: true)
    }

    public convenience init(copying bytes: [UInt8]) {
        self.init(size: bytes.count)
        bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }

    deinit { munmap(base, size) }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    public func equals(_ other: AnonymousMemory, from offset: Int = 0) -> Bool {
        size == other.size && memcmp(base + offset, other.base + offset, size - offset) == 0
    }

    public func equals(_ bytes: [UInt8]) -> Bool {
        bytes.count == size && bytes.withUnsafeBytes { memcmp(base, $0.baseAddress!, size) == 0 }
    }

    /// Pages that differ from `bytes`.
    public func changedPages(from bytes: [UInt8], pageSize: Int) -> Int {
        bytes.withUnsafeBytes { original in
            (0..<(size / pageSize)).filter {
                memcmp(base + $0 * pageSize, original.baseAddress! + $0 * pageSize, pageSize) != 0
            }.count
        }
    }
}
