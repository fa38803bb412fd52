/// Reads a trace's page entries in file order through one fixed buffer (`bufferBytes`), whatever
/// the length of the file or of its lines: the one parser for checking a trace and replaying it.
struct TraceScanner {
    /// Bytes read from the input at a time: the scanner's whole memory.
    static let bufferBytes = 64 << 10

    /// One page entry of a line.
    struct Entry {
        var page: UInt64
        /// The line's `t_ms`.
        var time: UInt64
        /// The first page of its line.
        var startsLine: Bool
        /// Byte offset of the line's start.
        var lineOffset: Int
    }

    private let input: TraceInput
    private let pageCount: UInt64
    private let storage: ScanBuffer
    private var buffer: UnsafeMutablePointer<UInt8> { storage.bytes }
    /// File offset of `buffer[0]`, bytes valid in it, and the next byte to read.
    private var bufferOffset: Int
    private var filled = 0
    private var position = 0
    private var atEnd = false
    private var atLineStart = true
    private var lineNumber: Int
    private var lineOffset = 0
    private var fieldIndex = 0
    private var lineTime: UInt64 = 0
    /// `t_ms` of the last line read (with or without pages).
    private(set) var lastTime: UInt64 = 0

    /// Starts at `offset`, which must be the start of a line (`lineNumber` is that line's, for
    /// messages).
    init(input: TraceInput, pageCount: Int, offset: Int = 0, lineNumber: Int = 0) {
        self.input = input
        self.pageCount = UInt64(pageCount)
        storage = ScanBuffer(count: Self.bufferBytes)
        bufferOffset = offset
        self.lineNumber = lineNumber
    }

    private static let form =
        "expected 't_ms page page ...' (decimal numbers separated by spaces), '#' comments or blank lines"

    /// The next byte without consuming it; nil at the end of the input.
    @inline(__always)
    private mutating func peek() throws(GuestError) -> UInt8? {
        if position == filled {
            if atEnd { return nil }
            bufferOffset += filled
            position = 0
            filled = input.read(
                at: bufferOffset, into: UnsafeMutableRawBufferPointer(start: buffer, count: Self.bufferBytes))
            if filled < 0 {
                filled = 0
                atEnd = true
                throw GuestError(.invalidTrace, "trace \(input.path ?? "text"): read failed at byte \(bufferOffset)")
            }
            if filled == 0 {
                atEnd = true
                return nil
            }
        }
        return buffer[position]
    }

    /// The next page entry, nil at the end of the input; throws naming the line that breaks the format.
    mutating func next() throws(GuestError) -> Entry? {
        while true {
            if atLineStart {
                atLineStart = false
                lineNumber += 1
                lineOffset = bufferOffset + position
                fieldIndex = 0
            }
            guard var byte = try peek() else { return nil }
            while byte == .space || byte == .tab || byte == .cr {
                position += 1
                guard let following = try peek() else { return nil }
                byte = following
            }
            if byte == .newline {
                position += 1
                atLineStart = true
                continue
            }
            if fieldIndex == 0 && byte == UInt8(ascii: "#") {
                try skipLine()
                continue
            }
            let value = try number()
            fieldIndex += 1
            if fieldIndex == 1 {
                if value < lastTime {
                    throw GuestError(
                        .invalidTrace,
                        "trace line \(lineNumber): t_ms \(value) is less than the previous line's \(lastTime); t_ms must not decrease"
                    )
                }
                lineTime = value
                lastTime = value
                continue
            }
            if value >= pageCount {
                throw GuestError(
                    .invalidTrace,
                    "trace line \(lineNumber): page \(value) is outside the image (pages 0…\(pageCount - 1))")
            }
            return Entry(page: value, time: lineTime, startsLine: fieldIndex == 2, lineOffset: lineOffset)
        }
    }

    /// Consumes a comment up to (and including) its newline.
    private mutating func skipLine() throws(GuestError) {
        while let byte = try peek() {
            position += 1
            if byte == .newline {
                atLineStart = true
                return
            }
        }
    }

    /// A decimal field; throws with its text (the first 64 bytes) when it is not a number.
    private mutating func number() throws(GuestError) -> UInt64 {
        var value: UInt64 = 0
        var valid = true
        let fieldOffset = bufferOffset + position
        // The field's bytes in the buffer in one loop; a field that crosses the buffer's end
        // goes on after the next read.
        while try peek() != nil {
            let bytes = buffer
            var end = position
            while end < filled {
                let byte = bytes[end]
                if byte == .space || byte == .tab || byte == .cr || byte == .newline { break }
                let digit = byte &- UInt8(ascii: "0")
                if digit > 9 {
                    valid = false
                } else if valid {
                    let (m, o1) = value.multipliedReportingOverflow(by: 10)
                    let (a, o2) = m.addingReportingOverflow(UInt64(digit))
                    if o1 || o2 { valid = false } else { value = a }
                }
                end += 1
            }
            let crossed = end == filled
            position = end
            if !crossed { break }
        }
        guard valid else {
            // Read again for the message: the field may have crossed the buffer's end.
            var text = [UInt8](repeating: 0, count: 65)
            let count = text.withUnsafeMutableBytes { input.read(at: fieldOffset, into: $0) }
            let field = text.prefix(max(count, 0)).prefix { $0 != .space && $0 != .tab && $0 != .cr && $0 != .newline }
            let shown = String(decoding: field.prefix(64), as: UTF8.self) + (field.count > 64 ? "…" : "")
            throw GuestError(.invalidTrace, "trace line \(lineNumber): '\(shown)' is not a number; \(Self.form)")
        }
        return value
    }
}

/// The scanner's one buffer, freed with it.
final class ScanBuffer {
    let bytes: UnsafeMutablePointer<UInt8>

    init(count: Int) { bytes = .allocate(capacity: count) }

    deinit { bytes.deallocate() }
}

extension UInt8 {
    fileprivate static let space = UInt8(ascii: " ")
    fileprivate static let tab = UInt8(ascii: "\t")
    fileprivate static let cr = UInt8(ascii: "\r")
    fileprivate static let newline = UInt8(ascii: "\n")
}

/// One vCPU's position in a trace it replays: a `TraceScanner` that moves forward from entry to
/// entry and starts again from the nearest checkpoint when asked for an earlier one (a new pass,
/// or registers that came with a migrated guest).
struct TraceReader {
    let trace: DirtyTrace
    private var scanner: TraceScanner?
    /// The entry read last: its line (among the lines with pages), index within the line, and
    /// global index; `line` is -1 before the first.
    private var line: Int64 = -1
    private var index: UInt64 = 0
    private var global: UInt64 = 0
    private var current: TraceScanner.Entry?
    /// The trace file no longer matches what was checked (it changed, or could not be read).
    private(set) var failed = false

    init(_ trace: DirtyTrace) { self.trace = trace }

    /// Entry `j` of line `lineIndex`: its page, its line's `t_ms` and the global index of the
    /// line's first entry; nil when the line has fewer entries (or the reader `failed`).
    mutating func entry(line lineIndex: UInt64, index j: UInt64) -> (page: UInt64, time: UInt64, lineStart: UInt64)? {
        if failed || trace.lineCount == 0 { return nil }
        let target = (Int64(lineIndex), j)
        // Back, or past a checkpoint ahead: start from the checkpoint rather than read on.
        if current == nil || target < (line, index) || trace.checkpoint(before: lineIndex).line > line {
            restart(at: lineIndex)
        }
        while !failed, (line, index) < target {
            let next: TraceScanner.Entry?
            do {
                next = try scanner?.next()
            } catch {
                failed = true
                return nil
            }
            guard let next else {
                // The end of the file: only the last line may end here.
                if line + 1 != Int64(trace.lineCount) { failed = true }
                return nil
            }
            if next.startsLine {
                line += 1
                index = 0
            } else {
                index += 1
            }
            global += 1
            current = next
            if line > Int64(lineIndex) { return nil }
        }
        guard !failed, let current, line == Int64(lineIndex), index == j else { return nil }
        return (current.page, current.time, global - index)
    }

    /// Positions the reader just before the checkpoint at or before `lineIndex`.
    private mutating func restart(at lineIndex: UInt64) {
        let checkpoint = trace.checkpoint(before: lineIndex)
        var scanner = TraceScanner(input: trace.input, pageCount: trace.pageCount, offset: checkpoint.offset)
        // The first entry read is the checkpoint line's first.
        guard let first = try? scanner.next(), first.startsLine else {
            failed = true
            return
        }
        self.scanner = scanner
        line = Int64(checkpoint.line)
        index = 0
        global = checkpoint.entry
        current = first
    }
}
