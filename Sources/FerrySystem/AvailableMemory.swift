import Glibc

/// The kernel's estimate of memory available for new allocations without swapping
/// (`MemAvailable` in /proc/meminfo), in bytes.
public func availableMemoryBytes() throws -> UInt64 {
    let text = try readSmallFile("/proc/meminfo")
    for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if fields.count >= 2, let kibibytes = UInt64(fields[1]) {
            return kibibytes * 1024
        }
    }
    throw SystemError(
        code: .unexpectedContent, call: "read(\"/proc/meminfo\")", errno: nil,
        detail: "no MemAvailable line (needs Linux 3.14+)")
}

/// Reads a small (procfs) file completely with plain read(2) calls.
func readSmallFile(_ path: String) throws -> String {
    let fd = try valueOrErrno("open(\"\(path)\")") { open(path, O_RDONLY | O_CLOEXEC) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = try chunk.withUnsafeMutableBytes { buffer in
            try valueOrErrno("read(\"\(path)\")") { read(fd, buffer.baseAddress, buffer.count) }
        }
        if count == 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}
