import CKVM
import FerrySystem
import Synchronization

/// Dirty tracking of a KVM guest's memory by KVM itself: the memory slot logs dirty pages
/// (KVM_MEM_LOG_DIRTY_PAGES) in manual-protect mode (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with
/// KVM_DIRTY_LOG_INITIALLY_SET), so `KVM_GET_DIRTY_LOG` only reads the log and
/// `KVM_CLEAR_DIRTY_LOG` clears and write-protects exactly the pages passed. Writes the VMM
/// itself makes (`KVMVirtualMachine.writeGuestMemory`, the boot image) are not in KVM's log;
/// they are recorded separately and merged into every harvest.
///
/// Mapping to the `DirtyTracker` contract:
/// - A slot starts with every page "dirty" and unprotected (INITIALLY_SET): the guest pays
///   nothing until a page is cleared.
/// - `start()` clears the whole log: every page write-protected, later writes recorded.
/// - `startDeferred()` does nothing to the slot; `protect(pages:)` clears the pages' bits
///   (rounded out to 64-page groups, KVM's granularity), which write-protects them.
/// - `harvest` = GET_DIRTY_LOG, then CLEAR_DIRTY_LOG of what it reported, OR-ed into the
///   bitmap with the VMM's writes. Pages never protected still have their initial bit, so a
///   harvest reports and protects them, as the contract asks.
/// - `stop()` turns the slot's logging off and on again: nothing protected, every page
///   "dirty" again, as for a fresh slot.
///
/// Writes by the guest between GET and CLEAR land in pages being reported (the caller reads
/// them after the harvest) or, once CLEAR protected the page, fault and are logged: none is lost.
///
/// `Sendable`: the mutable fields are in `state`, behind its lock.
public final class KVMDirtyTracker: DirtyTracker, Sendable {
    public let kind = TrackerKind.kvm
    private let machine: KVMVirtualMachine
    private let pageCount: Int

    private struct State {
        var started = false
        /// Scratch for the kernel's bitmap, one bit per page of the slot.
        var log: [UInt64]
    }
    private let state: Mutex<State>

    init(machine: KVMVirtualMachine) {
        self.machine = machine
        pageCount = machine.size / KVMGuestLayout.pageSize
        state = Mutex(State(log: [UInt64](repeating: 0, count: (pageCount + 63) / 64)))
    }

    deinit { stop() }

    public func start() throws {
        try state.withLock { state throws(KVMError) in
            try start(&state)
            try clearAll(firstPage: 0, pages: pageCount)
        }
    }

    public func startDeferred() throws {
        try state.withLock { state throws(KVMError) in try start(&state) }
    }

    public func protect(pages: Range<Int>) throws {
        precondition(pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside 0..<\(pageCount)")
        guard !pages.isEmpty else { return }
        try state.withLock { state throws(KVMError) in
            guard state.started else {
                throw KVMError(
                    .invalidConfiguration, "KVMDirtyTracker.protect(pages: \(pages)): the tracker is not started")
            }
            let first = pages.lowerBound & ~63
            let end = min((pages.upperBound + 63) & ~63, pageCount)
            try clearAll(firstPage: first, pages: end - first)
        }
    }

    @discardableResult
    public func harvest(into bitmap: inout DirtyBitmap) throws -> Int {
        precondition(bitmap.count == pageCount, "harvest bitmap has \(bitmap.count) pages, the guest has \(pageCount)")
        return try state.withLock { state throws(KVMError) in
            guard state.started else {
                throw KVMError(.invalidConfiguration, "KVMDirtyTracker.harvest: the tracker is not started")
            }
            let vm = machine.fd
            try kvmCall("ioctl(KVM_GET_DIRTY_LOG, slot 0)") {
                state.log.withUnsafeMutableBufferPointer {
                    ckvm_get_dirty_log(vm, KVMVirtualMachine.memorySlot, $0.baseAddress)
                }
            }
            // CLEAR exactly what GET reported (in place: no copy of the bitmap per harvest).
            let pages = UInt32(pageCount)
            try kvmCall("ioctl(KVM_CLEAR_DIRTY_LOG, reported pages)") {
                state.log.withUnsafeMutableBufferPointer {
                    ckvm_clear_dirty_log(vm, KVMVirtualMachine.memorySlot, 0, pages, $0.baseAddress)
                }
            }
            var found = 0
            state.log.withUnsafeBufferPointer { reported in
                bitmap.withUnsafeMutableWords { words in
                    for index in words.indices where reported[index] != 0 {
                        words[index] |= reported[index]
                        found += reported[index].nonzeroBitCount
                    }
                }
            }
            return found + machine.hostWrites.drain(into: &bitmap)
        }
    }

    public func stop() {
        state.withLock { state in
            guard state.started else { return }
            state.started = false
            let vm = machine.fd
            let memory = machine.memory
            let size = UInt64(machine.size)
            // Logging off then on: the slot forgets its protections and starts all-dirty again.
            // Best effort: stop() cannot fail, and the VM may be going away.
            _ = try? kvmCall("ioctl(KVM_SET_USER_MEMORY_REGION, slot 0, logging off)") {
                ckvm_set_memory_region(vm, KVMVirtualMachine.memorySlot, 0, 0, size, memory)
            }
            _ = try? kvmCall("ioctl(KVM_SET_USER_MEMORY_REGION, slot 0, KVM_MEM_LOG_DIRTY_PAGES)") {
                ckvm_set_memory_region(vm, KVMVirtualMachine.memorySlot, CKVM_MEM_LOG_DIRTY_PAGES, 0, size, memory)
            }
        }
    }

    private func start(_ state: inout State) throws(KVMError) {
        guard !state.started else { throw KVMError(.invalidConfiguration, "KVMDirtyTracker: started twice") }
        state.started = true
        machine.hostWrites.forget()
    }

    /// KVM_CLEAR_DIRTY_LOG of every page in `[firstPage, firstPage + pages)`: write-protects
    /// those KVM still has marked dirty (the others are protected already).
    private func clearAll(firstPage: Int, pages: Int) throws(KVMError) {
        let vm = machine.fd
        var mask = [UInt64](repeating: .max, count: (pages + 63) / 64)
        try kvmCall("ioctl(KVM_CLEAR_DIRTY_LOG, pages \(firstPage)..<\(firstPage + pages))") {
            mask.withUnsafeMutableBufferPointer {
                ckvm_clear_dirty_log(vm, KVMVirtualMachine.memorySlot, UInt64(firstPage), UInt32(pages), $0.baseAddress)
            }
        }
    }
}
