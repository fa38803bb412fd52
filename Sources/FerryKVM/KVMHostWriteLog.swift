import FerrySystem
import Synchronization

/// Pages written by the VMM since the last harvest.
final class KVMHostWriteLog: Sendable {
    private struct Log {
        var pages: DirtyBitmap
        var any = false
    }
    private let log: Mutex<Log>

    init(pageCount: Int) { log = Mutex(Log(pages: DirtyBitmap(count: pageCount))) }

    func record(bytes: Range<Int>) {
        guard !bytes.isEmpty else { return }
        let pageRange =
            (bytes.lowerBound / KVMGuestLayout.pageSize)..<((bytes.upperBound - 1) / KVMGuestLayout.pageSize + 1)
        log.withLock { log in
            log.pages.set(range: pageRange)
            log.any = true
        }
    }

    /// ORs the recorded pages into `bitmap`, forgets them, and returns how many were new there.
    func drain(into bitmap: inout DirtyBitmap) -> Int {
        log.withLock { log in
            guard log.any else { return 0 }
            var added = 0
            log.pages.forEachSetBit { page in
                if !bitmap[page] {
                    bitmap.set(page)
                    added += 1
                }
            }
            log.pages.clearAll()
            log.any = false
            return added
        }
    }

    func forget() {
        log.withLock { log in
            log.pages.clearAll()
            log.any = false
        }
    }
}
