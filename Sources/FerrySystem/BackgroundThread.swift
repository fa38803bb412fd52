import Foundation
import Synchronization

/// Runs a throwing closure on a thread of its own (8 MiB of stack), for the agent that must run
/// beside the one on the calling thread (a destination beside its source in `ferry demo` and the
/// tests). `wait()` returns the closure's value or throws its error.
///
/// `@unchecked Sendable`: `outcome` is written once by the thread before it signals `done`, and
/// read only after `done` was waited for (by the first caller of `result()`, under `waited`).
public final class BackgroundThread<Value: Sendable>: @unchecked Sendable {
    private var outcome: Result<Value, any Error>?
    private let done = DispatchSemaphore(value: 0)
    /// Whether a caller has waited for `done` yet: the semaphore is signalled once, so only the
    /// first waiter may take it; later ones (held here until then) find `true`.
    private let waited = Mutex(false)

    public init(_ body: @escaping @Sendable () throws -> Value) {
        let thread = Thread { [self] in
            outcome = Result { try body() }
            done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Waits for the closure and returns how it ended. May be called again.
    public func result() -> Result<Value, any Error> {
        waited.withLock { waited in
            if !waited {
                done.wait()
                waited = true
            }
        }
        return outcome!
    }

    /// Waits for the closure and returns its value, or throws its error.
    public func wait() throws -> Value {
        try result().get()
    }
}
