import CFerryShims
import Glibc

/// A file read and written at explicit offsets (`pread`/`pwrite`), whole requests at a time:
/// short transfers are continued, `EINTR` retried (`valueOrErrno`), and a read returns fewer
/// bytes than asked only at the end of the file. The descriptor closes with the object.
public final class PositionedFile: @unchecked Sendable {
    public let path: String
    private let fd: Int32

    /// Opens `path` for reading.
    public init(reading path: String) throws(SystemError) {
        self.path = path
        fd = try valueOrErrno("open(\"\(path)\", O_RDONLY)") { open(path, O_RDONLY | O_CLOEXEC) }
    }

    /// Creates `path` for writing, or empties it if it exists.
    public init(creating path: String) throws(SystemError) {
        self.path = path
        fd = try valueOrErrno("open(\"\(path)\", O_CREAT|O_TRUNC)") {
            open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
    }

    /// Opens the existing file `path` for reading and writing (a disk image), never truncating.
    public init(updating path: String) throws(SystemError) {
        self.path = path
        fd = try valueOrErrno("open(\"\(path)\", O_RDWR)") { open(path, O_RDWR | O_CLOEXEC) }
    }

    deinit { close(fd) }

    /// Makes what was written durable (`fdatasync`): the data and the size, not the timestamps.
    public func sync() throws(SystemError) {
        try valueOrErrno("fdatasync(\"\(path)\")") { fdatasync(fd) }
    }

    /// Sets the file's size (`ftruncate`): growing it adds a hole, which reads as zeros.
    public func truncate(to size: Int) throws(SystemError) {
        try valueOrErrno("ftruncate(\"\(path)\", \(size))") { ftruncate(fd, off_t(size)) }
    }

    /// The file's size now (`fstat`).
    public func size() throws(SystemError) -> Int {
        var info = stat()
        try valueOrErrno("fstat(\"\(path)\")") { fstat(fd, &info) }
        return Int(info.st_size)
    }

    /// Fills `buffer` from `offset`; returns the bytes read, fewer than `buffer.count` only at
    /// the end of the file.
    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        var done = 0
        while done < buffer.count {
            let got = try valueOrErrno("pread(\"\(path)\")") {
                pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            }
            if got == 0 { break }
            done += got
        }
        return done
    }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            done += try valueOrErrno("pwrite(\"\(path)\")") {
                pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            }
        }
    }

    /// Deallocates `count` bytes at `offset` (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): they read as
    /// zeros and take no space; the size stays.
    public func punchHole(at offset: Int, count: Int) throws(SystemError) {
        guard count > 0 else { return }
        try valueOrErrno("fallocate(\"\(path)\", PUNCH_HOLE, \(offset), \(count))", .negatedErrno) {
            ferry_punch_hole(fd, Int64(offset), Int64(count))
        }
    }

    /// Makes this file share `source`'s blocks (`ioctl(FICLONE)`, a reflink: btrfs, XFS); false
    /// where the file system cannot (ext4: `EOPNOTSUPP`, another file system: `EXDEV`).
    public func clone(from source: PositionedFile) -> Bool {
        ferry_clone_file(fd, source.fd) == 0
    }

    /// Copies `count` bytes of `source` at `offset` to the same offset here, in the kernel
    /// (`copy_file_range`: no copy through user space; a reflink where the file system shares
    /// extents). Holes of the source inside the range are written as data: copy data extents only.
    public func copyRange(from source: PositionedFile, at offset: Int, count: Int) throws(SystemError) {
        var done = 0
        while done < count {
            let copied = try valueOrErrno("copy_file_range(\"\(source.path)\" → \"\(path)\")", .negatedErrno) {
                ferry_copy_file_range(source.fd, fd, Int64(offset + done), Int64(count - done))
            }
            if copied == 0 { break }  // the source ends here
            done += Int(copied)
        }
    }
}
