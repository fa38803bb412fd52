import CFerryShims
import Glibc
import Synchronization

/// The CPU time (user and system, and for a KVM vCPU thread the time the guest ran in `KVM_RUN`)
/// that one thread of this process has used, as the scheduler accounts it: the first field of
/// `/proc/self/task/TID/schedstat`, in nanoseconds. A thread records its kernel thread ID when it
/// starts (`begin()`); any thread may then read its time, also after the thread has ended (the
/// last reading stays: an ended thread's task entry is gone, and the time it used does not
/// change any more).
public final class ThreadCPUTime: Sendable {
    private let threadID = Atomic<Int32>(0)
    private let lastNanoseconds = Atomic<UInt64>(0)

    public init() {}

    /// Called on the measured thread, first thing.
    public func begin() {
        threadID.store(ferry_gettid(), ordering: .releasing)
    }

    /// The thread's CPU time so far; 0 before it began.
    public var nanoseconds: UInt64 {
        let id = threadID.load(ordering: .acquiring)
        guard id > 0, let now = Self.read(threadID: id) else { return lastNanoseconds.load(ordering: .relaxed) }
        lastNanoseconds.store(now, ordering: .relaxed)
        return now
    }

    /// The schedstat run time of thread `threadID` of this process, nil when it has no entry.
    static func read(threadID: Int32) -> UInt64? {
        let fd = open("/proc/self/task/\(threadID)/schedstat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 96)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let text = buffer[..<count].prefix { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") }
        return UInt64(String(decoding: text, as: UTF8.self))
    }
}
