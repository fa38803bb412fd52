import FerrySystem

/// Pages written by the VMM since the last harvest.
///
/// `@unchecked Sendable`: `pages` is only touched with `lock` held.
final class KVMHostWriteLog: @unchecked Sendable {
    private var pages: DirtyBitmap
    private var any = false
    private let lock = PthreadMutex()

    init(pageCount: Int) { pages = DirtyBitmap(count: pageCount) }

    func record(bytes: Range<Int>) {
        guard !bytes.isEmpty else { return }
        let pageRange = (bytes.lowerBound / KVMGuestLayout.pageSize)..<((bytes.upperBound - 1) / KVMGuestLayout.pageSize + 1)
        lock.withLock {
            pages.set(range: pageRange)
            any = true
        }
    }

    /// ORs the recorded pages into `bitmap`, forgets them, and returns how many were new there.
    func drain(into bitmap: inout DirtyBitmap) -> Int {
        lock.withLock {
            guard any else { return 0 }
            var added = 0
            pages.forEachSetBit { page in
                if !bitmap[page] { bitmap.set(page); added += 1 }
            }
            pages.clearAll()
            any = false
            return added
        }
    }

    func forget() {
        lock.withLock {
            pages.clearAll()
            any = false
        }
    }
}
