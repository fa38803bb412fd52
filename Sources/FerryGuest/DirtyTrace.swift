import FerrySystem
import Glibc

/// A recorded dirty-page pattern to replay, read as a stream: whatever the file's length, a
/// trace holds its counts and at most `maxCheckpoints` positions in memory, and each replaying
/// vCPU reads it through a `TraceReader` with one buffer of `TraceScanner.bufferBytes`.
///
/// Text format: lines starting with `#` are comments and blank lines are ignored; every other
/// line is `t_ms page page ...`: the pages written in the interval ending `t_ms` milliseconds
/// after the start of the trace. `t_ms` must not decrease from line to line; every page must lie
/// inside the image. A line may list no pages (it only marks time).
///
/// A trace file must not change while a guest replays it: it is checked once, when loaded; a
/// replay that finds it different stops its vCPU (`TraceReader.failed`).
public struct DirtyTrace: Sendable, Equatable {
    /// Most positions (`Checkpoint`s) a trace keeps to start a replay in the middle of the file.
    public static let maxCheckpoints = 1024

    /// The start of a line that lists pages: where a reader can begin.
    struct Checkpoint: Equatable {
        /// Byte offset of the line in the file.
        var offset: Int
        /// Index of the line among the lines that list pages.
        var line: UInt64
        /// Global index of its first page entry.
        var entry: UInt64
    }

    /// Pages of the image the trace was checked against.
    public let pageCount: Int
    /// Lines that list at least one page.
    public let lineCount: Int
    /// Page entries in the whole trace.
    public let entryCount: Int
    /// `t_ms` of the last line (with or without pages): one pass of the trace lasts this long.
    public let durationMs: UInt64
    /// The file's bytes (or the text's), read on demand.
    let input: TraceInput
    /// Every `checkpointSpacing`-th line that lists pages, from line 0.
    let checkpoints: [Checkpoint]
    let checkpointSpacing: UInt64

    public static func == (a: DirtyTrace, b: DirtyTrace) -> Bool {
        a.pageCount == b.pageCount && a.lineCount == b.lineCount && a.entryCount == b.entryCount
            && a.durationMs == b.durationMs && a.checkpoints == b.checkpoints && a.input == b.input
    }

    /// Checks `text` as a trace for an image of `pageCount` pages.
    public static func parse(_ text: String, pageCount: Int) throws(GuestError) -> DirtyTrace {
        try check(TraceInput(bytes: Array(text.utf8)), pageCount: pageCount)
    }

    /// Checks `bytes` (a trace as it travels in `GUEST_CONFIG`).
    public static func parse(bytes: [UInt8], pageCount: Int) throws(GuestError) -> DirtyTrace {
        try check(TraceInput(bytes: bytes), pageCount: pageCount)
    }

    /// Opens the trace file at `path` and checks it, reading it once from start to end with a
    /// fixed buffer; the trace keeps the file open for its replays.
    public static func load(path: String, pageCount: Int) throws(GuestError) -> DirtyTrace {
        try check(try TraceInput(path: path), pageCount: pageCount)
    }

    /// One pass over the input: counts, checks every line, and records the checkpoints.
    static func check(_ input: TraceInput, pageCount: Int) throws(GuestError) -> DirtyTrace {
        var scanner = TraceScanner(input: input, pageCount: pageCount)
        var checkpoints: [Checkpoint] = []
        var spacing: UInt64 = 1
        var lines: UInt64 = 0
        var entries: UInt64 = 0
        while let entry = try scanner.next() {
            if entry.startsLine {
                if lines % spacing == 0 {
                    if checkpoints.count == maxCheckpoints {
                        checkpoints = stride(from: 0, to: checkpoints.count, by: 2).map { checkpoints[$0] }
                        spacing *= 2
                    }
                    if lines % spacing == 0 {
                        checkpoints.append(Checkpoint(offset: entry.lineOffset, line: lines, entry: entries))
                    }
                }
                lines += 1
            }
            entries += 1
        }
        return DirtyTrace(
            pageCount: pageCount, lineCount: Int(lines), entryCount: Int(entries), durationMs: scanner.lastTime,
            input: input, checkpoints: checkpoints, checkpointSpacing: spacing)
    }

    /// The last checkpoint at or before line `line`.
    func checkpoint(before line: UInt64) -> Checkpoint {
        let index = min(Int(line / checkpointSpacing), checkpoints.count - 1)
        return checkpoints[index]
    }
}

/// Where a trace's bytes come from: a file read with `pread` (kept open while the trace is in
/// use), or bytes in memory (tests).
/// `Sendable`: immutable; `pread` needs no shared file offset.
final class TraceInput: Sendable, Equatable {
    private let file: PositionedFile?
    private let bytes: [UInt8]
    let path: String?
    let size: Int

    init(bytes: [UInt8]) {
        file = nil
        self.bytes = bytes
        path = nil
        size = bytes.count
    }

    init(path: String) throws(GuestError) {
        do throws(SystemError) {
            let file = try PositionedFile(reading: path)
            size = try file.size()
            self.file = file
        } catch {
            throw GuestError.system(error)
        }
        bytes = []
        self.path = path
    }

    static func == (a: TraceInput, b: TraceInput) -> Bool {
        a === b || (a.file == nil && b.file == nil && a.bytes == b.bytes) || (a.path != nil && a.path == b.path)
    }

    /// Reads up to `buffer.count` bytes at `offset`; the bytes read (0 at the end), -1 on an error.
    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let file else {
            let count = max(0, min(buffer.count, bytes.count - offset))
            if count > 0 {
                bytes.withUnsafeBytes {
                    buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: count)
                }
            }
            return count
        }
        return (try? file.read(at: offset, into: buffer)) ?? -1
    }
}
