import Glibc

/// The process that holds an image's lock (`ImageLock`), as this host can tell it: from the
/// holder's sidecar when that is believable, else from `/proc/*/fdinfo`.
public struct LockHolder: Sendable, Equatable {
    public var pid: Int32
    /// `/proc/PID/cmdline` with spaces between the arguments (cut at 400 bytes).
    public var commandLine: String

    /// The first line of a sidecar: who locked which file, and when that process started.
    struct Record: Equatable {
        var pid: Int32
        /// Field 22 of /proc/PID/stat (clock ticks after boot): tells a recycled PID apart.
        var startTime: UInt64
        var device: UInt64
        var inode: UInt64

        var line: String { "pid \(pid) start \(startTime) device \(device) inode \(inode)" }

        init(pid: Int32, startTime: UInt64, device: UInt64, inode: UInt64) {
            self.pid = pid
            self.startTime = startTime
            self.device = device
            self.inode = inode
        }

        init?(line: Substring) {
            let words = line.split(separator: " ")
            guard words.count == 8, words[0] == "pid", words[2] == "start", words[4] == "device",
                words[6] == "inode", let pid = Int32(words[1]), let start = UInt64(words[3]),
                let device = UInt64(words[5]), let inode = UInt64(words[7])
            else { return nil }
            self.init(pid: pid, startTime: start, device: device, inode: inode)
        }
    }

    /// The holder of the lock on the file (`device`, `inode`) at `path`, or nil when it cannot be
    /// found. The sidecar is believed only when it names this file and a live process that
    /// started when the sidecar says; otherwise `/proc` is searched.
    public static func find(path: String, device: UInt64, inode: UInt64) -> LockHolder? {
        if let (record, recorded) = readSidecar(ImageLock.sidecarPath(for: path)),
            record.device == device, record.inode == inode, record.startTime != 0,
            startTime(pid: record.pid) == record.startTime
        {
            let live = commandLine(pid: record.pid)
            return LockHolder(pid: record.pid, commandLine: live.isEmpty ? recorded : live)
        }
        guard let pid = scanProc(device: device, inode: inode) else { return nil }
        return LockHolder(pid: pid, commandLine: commandLine(pid: pid))
    }

    /// The sidecar's record and recorded command line; nil when it is missing or malformed.
    static func readSidecar(_ sidecar: String) -> (record: Record, commandLine: String)? {
        guard let text = readSmallFile(sidecar) else { return nil }
        let lines = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = lines.first, let record = Record(line: first) else { return nil }
        let command = lines.count > 1 ? String(lines[1].split(separator: "\n").first ?? "") : ""
        return (record, command)
    }

    /// When process `pid` started (field 22 of /proc/PID/stat), nil when it does not exist.
    static func startTime(pid: Int32) -> UInt64? {
        guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        // After the command name in parentheses come fields 3, 4, ...: field 22 is the 20th.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    /// `/proc/PID/cmdline`, its arguments joined by spaces; empty when unreadable.
    static func commandLine(pid: Int32) -> String {
        guard let text = readSmallFile("/proc/\(pid)/cmdline") else { return "" }
        var words = text.split(separator: "\0").joined(separator: " ")
        if words.utf8.count > 400 { words = String(words.utf8.prefix(400)) ?? words + "…" }
        return words
    }

    /// A process with a descriptor whose `lock:` lines in /proc/PID/fdinfo list an OFD lock on
    /// the file: `OFDLCK ADVISORY WRITE -1 MAJ:MIN:INODE 0 EOF` (device numbers in hex).
    static func scanProc(device: UInt64, inode: UInt64) -> Int32? {
        let major = ((device >> 8) & 0xFFF) | ((device >> 32) & ~0xFFF)
        let minor = (device & 0xFF) | ((device >> 12) & ~0xFF)
        let key = " " + hex2(major) + ":" + hex2(minor) + ":\(inode) "
        for pid in directoryEntries("/proc").compactMap({ Int32($0) }) {
            for fd in directoryEntries("/proc/\(pid)/fdinfo") {
                guard let info = readSmallFile("/proc/\(pid)/fdinfo/\(fd)") else { continue }
                for line in info.split(separator: "\n") where line.hasPrefix("lock:") && line.contains("OFDLCK") {
                    if line.contains(key) { return pid }
                }
            }
        }
        return nil
    }

    private static func hex2(_ value: UInt64) -> String {
        let text = String(value, radix: 16)
        return text.count < 2 ? "0" + text : text
    }

    /// Names in `path` other than "." and ".."; empty when it cannot be read.
    static func directoryEntries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The first 64 KiB of a small file (a sidecar, a /proc file); nil when it cannot be read.
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 64 << 10)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        return String(decoding: bytes[..<done], as: UTF8.self)
    }
}
