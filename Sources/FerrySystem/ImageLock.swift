import CFerryShims
import Glibc
import Synchronization

/// An exclusive lock on a guest image, held for as long as an agent uses the file: an open file
/// description lock (`fcntl(F_OFD_SETLK)`, a write lock on the whole file, `l_pid` 0).
///
/// OFD locks belong to the open file description, not to the process: two `ImageLock`s on one
/// file in one process conflict just as in two processes (a POSIX `F_SETLK` lock would be
/// granted twice to the same process and dropped when any descriptor of the file is closed).
/// The kernel drops the lock when the last descriptor of the description closes, also when the
/// holder is killed: a lock is never stale.
///
/// The kernel does not say who holds an OFD lock (`F_OFD_GETLK` reports `l_pid` -1), so the
/// holder names itself in a sidecar file `PATH.lock`: `pid P start T device D inode I` and its
/// command line. The sidecar is only a name: the lock is the truth. A refused agent believes the
/// sidecar only when it names the locked file (device and inode) and a live process that started
/// at time T (so a recycled PID is not blamed); otherwise (a sidecar left by `kill -9`, or one
/// not yet written) it looks for the holder in `/proc/*/fdinfo`, whose `lock:` lines list each
/// descriptor's OFD locks. Either way the refusal names the path and, where it can, the PID and
/// command line.
///
/// `Sendable`: the descriptor and path are behind a mutex.
public final class ImageLock: Sendable {
    private struct State {
        var fd: Int32
        var path: String
    }

    private let state: Mutex<State>
    /// The locked file's device and inode (`fstat`).
    public let device: UInt64
    public let inode: UInt64
    /// The lock created the file (it did not exist).
    public let createdFile: Bool

    private init(fd: Int32, path: String, device: UInt64, inode: UInt64, createdFile: Bool) {
        state = Mutex(State(fd: fd, path: path))
        self.device = device
        self.inode = inode
        self.createdFile = createdFile
    }

    /// The path the locked file has (it follows `moved(to:)`).
    public var path: String { state.withLock { $0.path } }

    /// Whether the lock is still held (`release()` not called yet).
    public var isHeld: Bool { state.withLock { $0.fd >= 0 } }

    /// The sidecar that names the holder of `path`'s lock.
    public static func sidecarPath(for path: String) -> String { path + ".lock" }

    /// Locks the regular file at `path`, creating it empty (mode 0644, never truncating) when
    /// `create` and it does not exist. Never waits: when another open file description holds a
    /// lock on the file, throws `.locked` naming the path, the holder and the fix, before this
    /// process has written anything.
    public static func acquire(path: String, create: Bool = false) throws(SystemError) -> ImageLock {
        // A file replaced or renamed between open and lock is opened again (a few times).
        for _ in 0..<8 {
            let (fd, created) = try open(path, create: create)
            var info = stat()
            do throws(SystemError) {
                try valueOrErrno("fstat(\"\(path)\")") { fstat(fd, &info) }
                guard info.st_mode & S_IFMT == S_IFREG else {
                    throw SystemError(
                        code: .invalidArgument, call: "ImageLock.acquire(\"\(path)\")", errno: nil,
                        detail: "not a regular file; an image must be one")
                }
                let result = ferry_ofd_lock(fd, 1)
                if result == -EAGAIN || result == -EACCES {
                    throw lockedError(path: path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
                }
                do throws(SystemError) {
                    try valueOrErrno("fcntl(\"\(path)\", F_OFD_SETLK, F_WRLCK)", .negatedErrno) { result }
                } catch {
                    var failed = error
                    failed.detail =
                        "the file system holding the image cannot lock it (an agent refuses to use an image it cannot lock); keep images on a local file system (tmpfs, ext4, xfs) or one whose locks work"
                    throw failed
                }
            } catch {
                close(fd)
                throw error
            }
            var now = stat()
            guard stat(path, &now) == 0, now.st_dev == info.st_dev, now.st_ino == info.st_ino else {
                close(fd)
                continue
            }
            let lock = ImageLock(
                fd: fd, path: path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino), createdFile: created)
            lock.writeSidecar(path: path)
            return lock
        }
        throw SystemError(
            code: .busy, call: "ImageLock.acquire(\"\(path)\")", errno: nil,
            detail: "the file was replaced 8 times while it was being locked; something keeps renaming it; stop that")
    }

    /// Opens `path` read-write; with `create`, creates it exclusively when missing.
    private static func open(_ path: String, create: Bool) throws(SystemError) -> (fd: Int32, created: Bool) {
        while true {
            do throws(SystemError) {
                let fd = try valueOrErrno("open(\"\(path)\", O_RDWR)") { Glibc.open(path, O_RDWR | O_CLOEXEC) }
                return (fd, false)
            } catch {
                guard create, error.errno == .noSuchFileOrDirectory else { throw error }
            }
            do throws(SystemError) {
                let fd = try valueOrErrno("open(\"\(path)\", O_CREAT|O_EXCL)") {
                    Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                }
                return (fd, true)
            } catch {
                // Another agent created it meanwhile: open that one.
                guard error.errno == .fileExists else { throw error }
            }
        }
    }

    /// The error `acquire` throws for `path` when its lock is held now, or nil when it is free
    /// (or the file does not exist). Takes no lock: for a refusal before anything else is done.
    public static func conflict(path: String) -> SystemError? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, ferry_ofd_conflict(fd) == 1 else { return nil }
        return lockedError(path: path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// The refusal: the path, who holds it (or that it cannot be told), and what to do.
    static func lockedError(path: String, device: UInt64, inode: UInt64) -> SystemError {
        let detail: String
        if let holder = LockHolder.find(path: path, device: device, inode: inode) {
            detail =
                "\(path) is in use: PID \(holder.pid) (\(holder.commandLine)) holds its lock; wait for PID \(holder.pid) to finish, or stop it"
        } else {
            detail =
                "\(path) is in use: another process holds its lock (not found in /proc: it may run in another PID namespace, or on another host that shares the file); wait for it to finish, or stop it (lslocks lists the locks here)"
        }
        return SystemError(code: .locked, call: "F_OFD_SETLK(\"\(path)\")", errno: nil, detail: detail)
    }

    /// The locked file is now at `newPath` (the caller renamed it): the sidecar follows.
    public func moved(to newPath: String) {
        state.withLock { state in
            guard state.fd >= 0 else { return }
            removeSidecarIfOurs(path: state.path)
            state.path = newPath
        }
        writeSidecar(path: newPath)
    }

    /// Gives the lock up (closing the descriptor drops it) after removing the sidecar, and with
    /// `removingFile` the file itself when the path still names the locked file. Idempotent.
    public func release(removingFile: Bool = false) {
        state.withLock { state in
            guard state.fd >= 0 else { return }
            removeSidecarIfOurs(path: state.path)
            if removingFile, namesLockedFile(state.path) { unlink(state.path) }
            close(state.fd)
            state.fd = -1
        }
    }

    deinit { release() }

    private func namesLockedFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    /// Best effort: without the sidecar a refused agent still finds the holder in /proc.
    private func writeSidecar(path: String) {
        let me = getpid()
        let record = LockHolder.Record(
            pid: me, startTime: LockHolder.startTime(pid: me) ?? 0, device: device, inode: inode)
        let text = record.line + "\n" + LockHolder.commandLine(pid: me) + "\n"
        let sidecar = Self.sidecarPath(for: path)
        let fd = Glibc.open(sidecar, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Removes `path`'s sidecar when it names this lock (a later holder's is left alone).
    private func removeSidecarIfOurs(path: String) {
        let sidecar = Self.sidecarPath(for: path)
        guard let record = LockHolder.readSidecar(sidecar)?.record,
            record.pid == getpid(), record.device == device, record.inode == inode
        else { return }
        unlink(sidecar)
    }
}
