import NIOPosix

/// Threads of the agent's own for work that blocks (control-socket calls, spawning and waiting
/// for a `ferry vmm`, SQLite): never Swift's cooperative pool, whose threads (two on a 2-core
/// host) the HTTP handlers need. A handler awaits `run`; its thread is free meanwhile.
public final class BlockingWork: Sendable {
    private let pool: NIOThreadPool

    /// `threads` bounds how many blocking operations run at once (a stop waits up to its timeout).
    public init(threads: Int = 8) {
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    /// Runs `body` on one of the pool's threads and returns what it returns (or throws).
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    /// Lets running work finish, then ends the threads.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
