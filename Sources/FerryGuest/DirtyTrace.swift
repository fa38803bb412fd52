import Glibc

/// A recorded dirty-page pattern to replay.
///
/// Text format: lines starting with `#` are comments and blank lines are ignored; every other
/// line is `t_ms page page ...`: the pages written in the interval ending `t_ms` milliseconds
/// after the start of the trace. `t_ms` must not decrease from line to line; every page must lie
/// inside the image. A line may list no pages (it only marks time).
public struct DirtyTrace: Sendable, Equatable {
    /// Largest trace file accepted (the protocol carries the file in `GUEST_CONFIG`).
    public static let maxFileBytes = 16 << 20

    /// Pages of the image the trace was checked against.
    public let pageCount: Int
    /// `t_ms` of each line that lists pages.
    let lineTimes: [UInt64]
    /// Global index of each such line's first page in `pages`, plus the total at the end.
    let lineStarts: [Int]
    /// Every page, in file order.
    let pages: [UInt64]
    /// `t_ms` of the last line (with or without pages): one pass of the trace lasts this long.
    public let durationMs: UInt64

    /// Lines that list at least one page.
    public var lineCount: Int { lineTimes.count }
    /// Page entries in the whole trace.
    public var entryCount: Int { pages.count }

    public static func parse(_ text: String, pageCount: Int) throws(GuestError) -> DirtyTrace {
        var text = text
        let result = text.withUTF8 { bytes in
            Result { () throws(GuestError) in try parse(bytes, pageCount: pageCount) }
        }
        return try result.get()
    }

    /// Reads and parses the trace file at `path`.
    public static func load(path: String, pageCount: Int) throws(GuestError) -> DirtyTrace {
        try parse(try readFile(path: path), pageCount: pageCount)
    }

    /// The contents of the trace file at `path` (at most `maxFileBytes`).
    public static func readFile(path: String) throws(GuestError) -> String {
        let fd = try systemCall("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var st = stat()
        try systemCall("fstat(\(path))") { fstat(fd, &st) }
        guard Int(st.st_size) <= maxFileBytes else {
            throw GuestError(
                .invalidTrace,
                "trace \(path): \(st.st_size) bytes; a trace file may hold at most \(maxFileBytes) bytes (16 MiB)")
        }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeMutableBytes { buffer in
                Result { () throws(GuestError) in
                    try systemCall("read(\(path))") { read(fd, buffer.baseAddress! + done, buffer.count - done) }
                }
            }.get()
            if n == 0 { break }
            done += n
        }
        return String(decoding: bytes[..<done], as: UTF8.self)
    }

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, pageCount: Int) throws(GuestError) -> DirtyTrace {
        let form = "expected 't_ms page page ...' (decimal numbers separated by spaces), '#' comments or blank lines"
        var lineTimes: [UInt64] = []
        var lineStarts: [Int] = []
        var pages: [UInt64] = []
        var lastTime: UInt64 = 0
        var lineNumber = 0
        var position = 0
        let space = UInt8(ascii: " ")
        let tab = UInt8(ascii: "\t")
        let cr = UInt8(ascii: "\r")
        let newline = UInt8(ascii: "\n")
        while position < bytes.count {
            lineNumber += 1
            var end = position
            while end < bytes.count, bytes[end] != newline { end += 1 }
            defer { position = end + 1 }
            var i = position
            var fieldIndex = 0
            var lineTime: UInt64 = 0
            while true {
                while i < end, bytes[i] == space || bytes[i] == tab || bytes[i] == cr { i += 1 }
                if i == end { break }
                if fieldIndex == 0, bytes[i] == UInt8(ascii: "#") { break }
                let fieldStart = i
                var value: UInt64 = 0
                var valid = true
                while i < end, bytes[i] != space, bytes[i] != tab, bytes[i] != cr {
                    let digit = bytes[i] &- UInt8(ascii: "0")
                    if digit > 9 {
                        valid = false
                    } else if valid {
                        let (m, o1) = value.multipliedReportingOverflow(by: 10)
                        let (a, o2) = m.addingReportingOverflow(UInt64(digit))
                        if o1 || o2 { valid = false } else { value = a }
                    }
                    i += 1
                }
                if !valid {
                    let field = String(decoding: UnsafeBufferPointer(rebasing: bytes[fieldStart..<i]), as: UTF8.self)
                    throw GuestError(.invalidTrace, "trace line \(lineNumber): '\(field)' is not a number; \(form)")
                }
                if fieldIndex == 0 {
                    if value < lastTime {
                        throw GuestError(
                            .invalidTrace,
                            "trace line \(lineNumber): t_ms \(value) is less than the previous line's \(lastTime); t_ms must not decrease"
                        )
                    }
                    lineTime = value
                    lastTime = value
                } else {
                    if value >= UInt64(pageCount) {
                        throw GuestError(
                            .invalidTrace,
                            "trace line \(lineNumber): page \(value) is outside the image (pages 0…\(pageCount - 1))")
                    }
                    if fieldIndex == 1 {
                        lineTimes.append(lineTime)
                        lineStarts.append(pages.count)
                    }
                    pages.append(value)
                }
                fieldIndex += 1
            }
        }
        lineStarts.append(pages.count)
        return DirtyTrace(
            pageCount: pageCount, lineTimes: lineTimes, lineStarts: lineStarts, pages: pages, durationMs: lastTime)
    }
}
