import FerryCodec
import Foundation
import Glibc

/// Sparse disk files for the disk-move tests: holes punched into a generated image, and the
/// figures a move is judged by, measured here independently of FerryDiskMove (its own
/// `SEEK_DATA`/`SEEK_HOLE` walk and the page codec).
public enum SparseDisk {
    /// Keeps, at the start of each of `windows` equal slices of the file, `keepBytes` as they are
    /// and punches a hole into the rest of the slice (`fallocate --punch-hole`, util-linux).
    public static func punch(path: String, windows: Int, keepBytes: Int) throws {
        guard let tool = Host.tool("fallocate") else { throw RelayError("fallocate(1) is not installed") }
        var info = stat()
        guard stat(path, &info) == 0 else { throw RelayError("stat \(path): errno \(errno)") }
        let slice = Int(info.st_size) / windows
        for window in 0..<windows where slice > keepBytes {
            try Host.run([
                tool, "--punch-hole", "--offset", "\(window * slice + keepBytes)", "--length", "\(slice - keepBytes)",
                path,
            ])
        }
    }

    /// Bytes the file occupies (`st_blocks × 512`, what `du` counts).
    public static func usedBytes(_ path: String) -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { return -1 }
        return Int(info.st_blocks) * 512
    }

    /// The data extents of `path` (`SEEK_DATA`/`SEEK_HOLE`), in bytes.
    public static func dataExtents(_ path: String) throws -> [Range<Int>] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RelayError("open \(path): errno \(errno)") }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        let size = Int(info.st_size)
        var extents: [Range<Int>] = []
        var offset = 0
        while offset < size {
            let data = Int(lseek(fd, off_t(offset), 3))  // SEEK_DATA
            if data < 0 { break }  // ENXIO: no data past offset
            let hole = Int(lseek(fd, off_t(data), 4))  // SEEK_HOLE
            extents.append(data..<hole)
            offset = hole
        }
        return extents
    }

    /// The size of the allocated data compressed with the page codec of live migration: each
    /// 4 KiB page of the data extents encoded with LZ4 where that pays (zero pages as markers,
    /// 0 bytes), its bytes summed. Returns it with the allocated bytes.
    public static func lz4Reference(_ path: String) throws -> (allocated: Int, compressed: Int) {
        let page = 4096
        let encoder = PageEncoder(pageSize: page, mode: .lz4, wordsLimit: 0)
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let slot = UnsafeMutableRawPointer.allocate(byteCount: page, alignment: 64)
        defer { slot.deallocate() }
        var allocated = 0
        var compressed = 0
        for extent in try dataExtents(path) {
            allocated += extent.count
            try handle.seek(toOffset: UInt64(extent.lowerBound))
            var left = extent.count
            while left > 0 {
                var bytes = [UInt8](try handle.read(upToCount: min(left, 1 << 20)) ?? Data())
                guard !bytes.isEmpty else { break }
                left -= bytes.count
                let whole = (bytes.count + page - 1) / page * page
                bytes += [UInt8](repeating: 0, count: whole - bytes.count)
                bytes.withUnsafeBytes { buffer in
                    for start in stride(from: 0, to: whole, by: page) {
                        compressed += encoder.encode(page: buffer.baseAddress! + start, into: slot).length
                    }
                }
            }
        }
        return (allocated, compressed)
    }
}

/// Whether two files hold the same bytes (`cmp -s`).
public func filesEqual(_ a: String, _ b: String) throws -> Bool {
    let cmp = Process()
    cmp.executableURL = URL(fileURLWithPath: "/usr/bin/cmp")
    cmp.arguments = ["-s", a, b]
    try cmp.run()
    cmp.waitUntilExit()
    return cmp.terminationStatus == 0
}
