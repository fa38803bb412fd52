import Synchronization

/// A plain lock for a class's fields (no condition variable needed), now a `Synchronization.Mutex`
/// underneath like every other plain lock. Only `KVMConsole` still uses this name; it goes when
/// that file moves to `Mutex` itself. (`VCPUMonitor` keeps pthread primitives: it needs
/// condition variables.)
final class PthreadMutex: Sendable {
    private let mutex = Mutex(())

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        try mutex.withLock { _ in
            nonisolated(unsafe) let result = try body()
            return result
        }
    }
}
