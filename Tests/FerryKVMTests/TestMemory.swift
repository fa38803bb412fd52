import Glibc

/// Anonymous shared memory for a test guest (zero-filled, page-aligned), unmapped on deinit.
final class TestMemory {
    let base: UnsafeMutableRawPointer
    let size: Int

    init(mebibytes: Int) {
        size = mebibytes << 20
        let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        precondition(mapped != MAP_FAILED, "mmap of \(mebibytes) MiB failed")
        base = mapped!
    }

    deinit { munmap(base, size) }

    func equals(_ other: TestMemory, from offset: Int) -> Bool {
        size == other.size && memcmp(base + offset, other.base + offset, size - offset) == 0
    }
}
