import FerryDiskMove
import Foundation
import Synchronization

/// Which side of a disk move a report describes.
enum DiskMoveRole: String {
    case source, destination
}

/// The progress line of `ferry disk send/receive` on stderr, once the move has taken a second:
/// redrawn in place on a terminal, otherwise a plain line at most once a second.
final class DiskProgressDisplay: Sendable {
    let role: String
    let quiet: Bool
    private let lastLine = Mutex<Double>(0)

    init(role: String, quiet: Bool) {
        self.role = role
        self.quiet = quiet
    }

    var handler: DiskMoveProgressHandler? {
        if quiet { return nil }
        return { [self] progress in show(progress) }
    }

    private func show(_ progress: DiskMoveProgress) {
        guard progress.elapsedSeconds >= 1 else { return }
        let line = Self.line(role: role, progress)
        if Terminal.isTTY {
            Terminal.progress(line)
            return
        }
        let due = lastLine.withLock { last -> Bool in
            guard progress.elapsedSeconds - last >= 1 else { return false }
            last = progress.elapsedSeconds
            return true
        }
        if due { FileHandle.standardError.write(Data("\(line)\n".utf8)) }
    }

    /// `[disk send] 47% (1234/2600 blocks), 61 MB wire, elapsed 1.2s, ETA 1.4s, 51 MB/s`.
    static func line(role: String, _ progress: DiskMoveProgress) -> String {
        let rate = progress.elapsedSeconds > 0 ? Double(progress.wireBytes) / progress.elapsedSeconds : nil
        return "[disk \(role)] \(ProgressLine.percent(progress.fraction)) "
            + "(\(progress.blocksDone)/\(progress.blocksTotal) blocks), \(ProgressLine.mb(progress.wireBytes)) MB wire, "
            + "elapsed \(ProgressLine.duration(progress.elapsedSeconds)), ETA \(ProgressLine.duration(progress.etaSeconds)), "
            + ProgressLine.rate(rate)
    }

    func finish() { Terminal.clearProgress() }
}

/// The report `ferry disk send/receive` prints on stdout (on stderr when the JSON goes to stdout).
enum DiskMoveText {
    static func print(_ report: DiskMoveReport, role: DiskMoveRole, path: String, json: JSONTarget) {
        let verb = role == .source ? "moved \(path) to \(report.peer)" : "received \(path) from \(report.peer)"
        let ratio = report.allocatedBytes > 0 ? Double(report.wireBytes) / Double(report.allocatedBytes) : 0
        let text =
            "\(verb): disk \(report.diskSize) bytes, allocated \(report.allocatedBytes), wire \(report.wireBytes) bytes "
            + String(format: "(%.3f × allocated)", ratio)
            + String(format: " in %.2f s, %.1f MB/s\n", report.seconds, report.megabytesPerSecond)
            + "blocks of \(report.blockSize) B: \(report.blocksSent) of \(report.blockCount) sent (\(report.zeroBlocks) zero, "
            + "\(report.lz4Blocks) LZ4, \(report.rawBlocks) raw); written \(report.bytesWritten) bytes; digest 0x"
            + String(report.digest, radix: 16) + "; \(report.security)"
            + (report.resumes > 0 ? "; resumed \(report.resumes)×, \(report.blocksResent) blocks sent again" : "")
            + (report.baseHashBytes == 0
                ? ""
                : "\nonto the older copy" + (report.baseCopy.isEmpty ? "" : " (\(report.baseCopy))")
                    + ": \(report.blocksUnchanged) blocks unchanged, "
                    + "hash table \(report.baseHashBytes) bytes, "
                    + String(format: "%.2f s hashing", report.baseSeconds))
            + "\n"
        let handle = json == .standardOutput ? FileHandle.standardError : FileHandle.standardOutput
        handle.write(Data(text.utf8))
    }
}

/// The JSON report of `ferry disk send/receive` (keys in docs/disk-move.md).
enum DiskMoveJSON {
    static func write(
        _ report: DiskMoveReport, role: DiskMoveRole, path: String, error: (any Error)?, to target: JSONTarget
    )
        throws
    {
        guard target != .none else { return }
        var object: [String: Any] = [
            "role": role.rawValue, "outcome": error == nil ? "ok" : "failed", "path": path, "peer": report.peer,
            "disk_size": report.diskSize, "allocated_bytes": report.allocatedBytes, "block_size": report.blockSize,
            "block_count": report.blockCount, "blocks_sent": report.blocksSent, "zero_blocks": report.zeroBlocks,
            "lz4_blocks": report.lz4Blocks, "raw_blocks": report.rawBlocks, "wire_bytes": report.wireBytes,
            "bytes_written": report.bytesWritten, "seconds": report.seconds, "mb_per_s": report.megabytesPerSecond,
            "digest": String(format: "0x%016llx", report.digest), "security": report.security,
            "resumes": report.resumes, "blocks_resent": report.blocksResent,
            "blocks_unchanged": report.blocksUnchanged, "base_copy": report.baseCopy,
            "base_seconds": report.baseSeconds, "base_hash_bytes": report.baseHashBytes,
        ]
        if let error {
            object["error"] = ["exit_code": Int(exitCode(for: error)), "message": "\(error)"]
        }
        target.writeOrWarn { try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) }
    }
}
