import CFerryShims
import Glibc

/// Guest image files: plain files whose bytes are guest memory, created sparse.
public enum ImageFile {
    /// Creates `path` with `size` bytes, sparse (`ftruncate`, no blocks allocated).
    /// Refuses an existing file unless `overwrite` (then it is truncated to `size`).
    ///
    /// With `reserve` the file system allocates all `size` bytes now (`posix_fallocate`), so that
    /// writes through a shared mapping of the file can never find the disk full: on a sparse
    /// file such a write raises SIGBUS and kills the process. Without room the file is removed
    /// and the error names the directory, the bytes needed and the bytes free.
    /// (tmpfs allocates and zeroes the memory here, about 0.5 s per GiB, which the writes into a
    /// sparse mapping would otherwise pay page by page; ext4 and xfs only mark the extents.)
    public static func create(path: String, size: Int, overwrite: Bool, reserve: Bool = false) throws {
        guard size > 0 else {
            throw SystemError(
                code: .invalidArgument, call: "ImageFile.create(\"\(path)\")", errno: nil,
                detail: "size must be positive, got \(size)")
        }
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL)
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("open(\"\(path)\", O_CREAT|\(overwrite ? "O_TRUNC" : "O_EXCL"))") {
                open(path, flags, 0o644)
            }
        } catch var error {
            guard error.errno == .fileExists else { throw error }
            error.detail = "the file already exists; remove it or pass overwrite: true"
            throw error
        }
        defer { close(fd) }
        try valueOrErrno("ftruncate(\"\(path)\", \(size))") { ftruncate(fd, off_t(size)) }
        if reserve {
            do {
                try allocate(fd: fd, path: path, size: size)
            } catch {
                unlink(path)
                throw error
            }
        }
    }

    /// `posix_fallocate(fd, 0, size)`, retried on EINTR; ENOSPC and EFBIG name the space needed.
    private static func allocate(fd: Int32, path: String, size: Int) throws {
        // posix_fallocate returns the error code itself (it does not set errno): the shims' convention.
        do throws(SystemError) {
            try valueOrErrno("posix_fallocate(\"\(path)\", \(size))", .negatedErrno) {
                -posix_fallocate(fd, 0, off_t(size))
            }
        } catch {
            guard error.errno == .noSpace || error.errno == .fileTooLarge else { throw error }
            // The file holds some of the blocks by now; they are freed with it.
            let free =
                (try? freeBytes(directoryOf: path)).map { "\($0) bytes are free there" } ?? "its free space is unknown"
            var full = error
            full.detail =
                "not enough space for the image: it needs \(size) bytes in \(parentDirectory(of: path)) and \(free); free some space or use another directory"
            throw full
        }
    }

    public static func size(path: String) throws -> Int {
        var info = stat()
        try valueOrErrno("stat(\"\(path)\")") { stat(path, &info) }
        return Int(info.st_size)
    }

    public static func exists(path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    public static func remove(path: String) throws {
        try valueOrErrno("unlink(\"\(path)\")") { unlink(path) }
    }

    public static func rename(from: String, to: String) throws {
        try valueOrErrno("rename(\"\(from)\", \"\(to)\")") { Glibc.rename(from, to) }
    }

    /// Makes a rename or a new file in `path`'s directory durable (`fsync` of the directory).
    public static func syncDirectory(of path: String) throws {
        let directory = parentDirectory(of: path)
        let fd = try valueOrErrno("open(\"\(directory)\", O_DIRECTORY)") {
            open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        defer { close(fd) }
        try valueOrErrno("fsync(\"\(directory)\")") { fsync(fd) }
    }

    /// Bytes an unprivileged writer may still use in the file system holding `path`'s directory
    /// (`statvfs` `f_bavail * f_frsize`). `path` itself need not exist.
    public static func freeBytes(directoryOf path: String) throws -> UInt64 {
        let directory = parentDirectory(of: path)
        var info = statvfs()
        try valueOrErrno("statvfs(\"\(directory)\")") { statvfs(directory, &info) }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    /// The type of the file system holding `path`'s directory ("tmpfs", "ext4", "xfs", ...),
    /// nil when its magic number is not one we know. ext2/3/4 share a magic and read "ext4".
    public static func filesystemType(directoryOf path: String) throws -> String? {
        let directory = parentDirectory(of: path)
        var magic: UInt64 = 0
        try valueOrErrno("statfs(\"\(directory)\")", .negatedErrno) { ferry_statfs_magic(directory, &magic) }
        return filesystemNames[magic & 0xFFFF_FFFF]
    }

    private static let filesystemNames: [UInt64: String] = [
        0x0102_1994: "tmpfs",
        0x0000_EF53: "ext4",
        0x5846_5342: "xfs",
        0x9123_683E: "btrfs",
        0x794C_7630: "overlayfs",
        0x8584_58F6: "ramfs",
        0x9584_58F6: "hugetlbfs",
        0xF2F5_2010: "f2fs",
        0x2FC1_2FC1: "zfs",
        0x0000_6969: "nfs",
        0x0102_1997: "9p",
        0x6573_5546: "fuse",
        0x0000_4D44: "vfat",
        0x5346_544E: "ntfs",
    ]

    /// The directory part of `path` ("." for a bare name, "/" for a file at the root).
    public static func parentDirectory(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        if slash == trimmed.startIndex { return "/" }
        return String(trimmed[..<slash])
    }
}
