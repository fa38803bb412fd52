import Glibc

/// A memory mapping owned by this value: unmapped when it goes away.
///
/// Guest images are file mappings (`MAP_SHARED`, so writes reach the file and other mappings
/// of it); `anonymous` gives private memory of the same shape for tests and scratch space.
public struct MappedRegion: ~Copyable {
    public let base: UnsafeMutableRawPointer
    public let size: Int

    private init(base: UnsafeMutableRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    /// Maps the whole file at `path` `MAP_SHARED`, read-write when `writable`.
    /// Throws `.invalidArgument` for an empty file (a zero-length mapping is meaningless).
    public static func mapFile(path: String, writable: Bool) throws -> MappedRegion {
        let fd = try valueOrErrno("open(\"\(path)\")") {
            open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        }
        defer { close(fd) }
        var info = stat()
        try valueOrErrno("fstat(\"\(path)\")") { fstat(fd, &info) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw SystemError(
                code: .invalidArgument, call: "mapFile(\"\(path)\")", errno: nil,
                detail: "not a regular file")
        }
        let size = Int(info.st_size)
        guard size > 0 else {
            throw SystemError(
                code: .invalidArgument, call: "mapFile(\"\(path)\")", errno: nil,
                detail: "the file is empty; create it with a size first (ImageFile.create)")
        }
        let protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        guard let base = mmap(nil, size, protection, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            throw SystemError.lastError("mmap(\"\(path)\", \(size), MAP_SHARED)")
        }
        return MappedRegion(base: base, size: size)
    }

    /// Maps `size` bytes (rounded up to whole pages) of private zero-filled memory.
    public static func anonymous(size: Int) throws -> MappedRegion {
        guard size > 0 else {
            throw SystemError(
                code: .invalidArgument, call: "MappedRegion.anonymous(size: \(size))",
                errno: nil, detail: "size must be positive")
        }
        let rounded = (size + systemPageSize - 1) / systemPageSize * systemPageSize
        guard let base = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            base != MAP_FAILED
        else {
            throw SystemError.lastError("mmap(nil, \(rounded), MAP_PRIVATE|MAP_ANONYMOUS)")
        }
        return MappedRegion(base: base, size: rounded)
    }

    /// Faults every page in now (`MADV_POPULATE_WRITE` when `writable`, else `_READ`), so later
    /// accesses do not pay for page allocation or file reads. Writable population of a file
    /// mapping allocates its blocks (a sparse file stops being sparse).
    public func populate(writable: Bool) throws {
        let advice = writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ
        let name = writable ? "MADV_POPULATE_WRITE" : "MADV_POPULATE_READ"
        try valueOrErrno("madvise(\(hexAddress(base)), \(size), \(name))") {
            madvise(base, size, advice)
        }
    }

    /// Like `populate(writable:)` for the bytes `range` of the region only (page-aligned).
    public func populate(_ range: Range<Int>, writable: Bool) throws {
        precondition(
            range.lowerBound >= 0 && range.upperBound <= size && range.lowerBound % systemPageSize == 0,
            "populate range \(range) is not page-aligned inside the region of \(size) bytes")
        guard !range.isEmpty else { return }
        let advice = writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ
        let name = writable ? "MADV_POPULATE_WRITE" : "MADV_POPULATE_READ"
        try valueOrErrno("madvise(\(hexAddress(base + range.lowerBound)), \(range.count), \(name))") {
            madvise(base + range.lowerBound, range.count, advice)
        }
    }

    /// Writes dirty pages of a file mapping back to the file and waits (`msync(MS_SYNC)`).
    public func sync() throws {
        try valueOrErrno("msync(\(hexAddress(base)), \(size), MS_SYNC)") {
            msync(base, size, MS_SYNC)
        }
    }

    deinit {
        munmap(base, size)
    }
}
