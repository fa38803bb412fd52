import Foundation

/// Blocking work (control sockets, process waits, agent-to-agent calls) called from async code:
/// it runs on a thread of its own, never on Swift's cooperative pool, which has one thread per
/// core and which the agent's HTTP handlers need (two cores: two blocked calls starve the API).
public enum OffPool {
    public static func run<T: Sendable>(
        _ name: String = "ferry-agent-blocking", _ body: @escaping @Sendable () throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = name
            thread.start()
        }
    }
}
