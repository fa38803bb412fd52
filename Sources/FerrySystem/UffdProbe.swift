import CFerryShims
import Glibc

/// What this kernel's userfaultfd offers the uffd tracker.
struct UffdSupport: Sendable {
    /// Features to request with UFFDIO_API.
    var features: UInt64

    var summary: String {
        var names = ["WP_ASYNC"]
        if features & FERRY_UFFD_FEATURE_WP_UNPOPULATED != 0 { names.append("WP_UNPOPULATED") }
        if features & FERRY_UFFD_FEATURE_WP_HUGETLBFS_SHMEM != 0 { names.append("WP_HUGETLBFS_SHMEM") }
        return "features " + names.joined(separator: "|")
    }
}

/// Why the uffd tracker cannot be used here.
struct UffdUnavailable: Error, Sendable {
    var text: String
}

/// Finds out once per process whether the uffd tracker works, by negotiating features and
/// running it on small anonymous and shared (shmem) regions: an already-touched page and a
/// never-touched page are written and must be reported by exactly one harvest.
enum UffdProbe {
    static let result: Result<UffdSupport, UffdUnavailable> = run()

    /// The features we want, best first.
    static let wanted: UInt64 =
        FERRY_UFFD_FEATURE_WP_ASYNC | FERRY_UFFD_FEATURE_WP_UNPOPULATED | FERRY_UFFD_FEATURE_WP_HUGETLBFS_SHMEM

    private static func run() -> Result<UffdSupport, UffdUnavailable> {
        let supported: UInt64
        do {
            supported = try queryFeatures()
        } catch {
            return .failure(UffdUnavailable(text: explain(error)))
        }
        guard supported & FERRY_UFFD_FEATURE_WP_ASYNC != 0 else {
            return .failure(UffdUnavailable(text: "kernel lacks UFFD_FEATURE_WP_ASYNC (needs Linux 6.7+)"))
        }
        let support = UffdSupport(features: wanted & supported)
        for shared in [false, true] {
            if let failure = selfTest(support: support, shared: shared) {
                return .failure(UffdUnavailable(text: failure))
            }
        }
        return .success(support)
    }

    /// UFFDIO_API with no features on a throwaway fd: the kernel answers with all it supports.
    static func queryFeatures() throws -> UInt64 {
        var fd: Int32 = -1
        try valueOrErrno("userfaultfd(O_CLOEXEC|O_NONBLOCK)", .negatedErrno) { ferry_uffd_open(&fd) }
        defer { close(fd) }
        var supported: UInt64 = 0
        try valueOrErrno("ioctl(UFFDIO_API, features: 0)", .negatedErrno) { ferry_uffd_api(fd, 0, &supported) }
        return supported
    }

    private static func explain(_ error: any Error) -> String {
        guard let error = error as? SystemError else { return "\(error)" }
        switch error.errno {
        case .notImplemented: return "kernel built without userfaultfd (\(error))"
        case .notPermitted:
            return "userfaultfd not permitted (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1): \(error)"
        case .notATerminal where error.call.contains("PAGEMAP_SCAN"),
            .invalidArgument where error.call.contains("PAGEMAP_SCAN"):
            return "kernel lacks PAGEMAP_SCAN (needs Linux 6.7+): \(error)"
        default: return "\(error)"
        }
    }

    private static func selfTest(support: UffdSupport, shared: Bool) -> String? {
        let pageSize = systemPageSize
        let length = 4 * pageSize
        let flags = (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS
        let kind = shared ? "shared (shmem)" : "anonymous"
        guard let base = mmap(nil, length, PROT_READ | PROT_WRITE, flags, -1, 0), base != MAP_FAILED else {
            return "self-test: \(SystemError.lastError("mmap(\(length))"))"
        }
        defer { munmap(base, length) }
        base.storeBytes(of: 1, as: UInt8.self)  // page 0 touched before protection, 1-3 never
        let tracker = UffdDirtyTracker(base: base, length: length, pageSize: pageSize, features: support.features)
        defer { tracker.stop() }
        do {
            try tracker.start()
            (base + 0).storeBytes(of: 2, as: UInt8.self)
            (base + 3 * pageSize).storeBytes(of: 3, as: UInt8.self)
            var first = DirtyBitmap(count: 4)
            let firstCount = try tracker.harvest(into: &first)
            var second = DirtyBitmap(count: 4)
            let secondCount = try tracker.harvest(into: &second)
            var found: [Int] = []
            first.forEachSetBit { found.append($0) }
            guard found == [0, 3], firstCount == 2, second.isEmpty, secondCount == 0 else {
                return "self-test on \(kind) memory failed: wrote pages [0, 3], first harvest reported \(found), "
                    + "second \(second.popcount()) pages"
            }
        } catch {
            return "self-test on \(kind) memory: " + explain(error)
        }
        return nil
    }
}
