import CFerryShims
import Glibc

/// Keeps the process alive when the file under a shared mapping shrinks. Without it, any access
/// beyond the file's new end (a guest vCPU's write, an encoder's read) raises SIGBUS and kills the
/// process — and with it a guest that could have gone on running. While a guard is held, such an
/// access finds a private zero page mapped in its place instead, and `replaced` says how many
/// pages that happened to and where the first one was, so the owner can stop what it does and
/// say why. The bytes beyond the cut are gone either way; the guard saves the process, not them.
///
/// `@unchecked Sendable`: the slot is immutable and the C side reads and writes atomics.
public final class BusErrorGuard: @unchecked Sendable {
    private let slot: Int32

    /// Guards `[base, base + length)`; at most `FERRY_BUS_MAX_RANGES` (8) guards per process.
    public init(base: UnsafeMutableRawPointer, length: Int, pageSize: Int) throws {
        var slot: Int32 = -1
        do throws(SystemError) {
            try valueOrErrno("ferry_bus_guard_begin(\(base), \(length))", .negatedErrno) {
                ferry_bus_guard_begin(base, length, pageSize, &slot)
            }
        } catch {
            guard error.errno == .busy else { throw error }
            var busy = error
            busy.code = .busy
            busy.detail = "all \(FERRY_BUS_MAX_RANGES) SIGBUS guard slots are in use"
            throw busy
        }
        self.slot = slot
    }

    deinit { ferry_bus_guard_end(slot) }

    /// Pages replaced by zero pages so far and the byte offset of the lowest one; nil while none.
    public var replaced: (pages: Int, firstOffset: Int)? {
        var first: UInt64 = 0
        let pages = ferry_bus_guard_replaced(slot, &first)
        return pages == 0 ? nil : (Int(pages), Int(first))
    }
}
