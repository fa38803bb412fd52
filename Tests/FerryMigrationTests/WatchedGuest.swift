import FerryGuestMigration
import FerryProtocol
import FerrySystem
import Foundation
import Synchronization

@testable import FerryMigration

/// The source's guest, watched: when it was paused and resumed (the blackout as the guest
/// lives it), forwarding everything to the built-in guest.
final class WatchedGuest: ForwardingMigratableGuest, @unchecked Sendable {
    let inner: BuiltinMigratableGuest
    private let lock = NSLock()
    private var pausedAt: UInt64?
    private var longest: UInt64 = 0
    private let pausedFlag = Atomic<Bool>(false)

    init(_ inner: BuiltinMigratableGuest) { self.inner = inner }
    var forwardee: any MigratableGuest { inner }

    /// True from the first pause on (the blackout, or the pause that measures its cost at setup).
    let pauses = Atomic<Int>(0)
    var isPaused: Bool { pausedFlag.load(ordering: .acquiring) }
    /// The longest pause that ended, in seconds.
    var longestPauseSeconds: Double {
        lock.lock()
        defer { lock.unlock() }
        return Double(longest) / 1e9
    }

    func pause() -> UInt64 {
        let took = inner.pause()
        lock.lock()
        pausedAt = MonotonicClock.now()
        lock.unlock()
        pauses.add(1, ordering: .relaxed)
        pausedFlag.store(true, ordering: .releasing)
        return took
    }
    func resume() {
        pausedFlag.store(false, ordering: .releasing)
        lock.lock()
        if let pausedAt { longest = max(longest, MonotonicClock.now() &- pausedAt) }
        pausedAt = nil
        lock.unlock()
        inner.resume()
    }
}
