import FerrySystem
import FerryTestSupport
import Foundation
import Testing

@Suite struct ImageLockTests {
    /// Two open file descriptions of one file in one process: the second lock is refused. A POSIX
    /// (`F_SETLK`) lock would be granted to the same process again, which is why images are
    /// locked with OFD locks; the refusal names the path, this process's PID and command line.
    @Test func secondDescriptionInOneProcessIsRefused() throws {
        let scratch = Scratch("lock-twice")
        let path = scratch.file("guest.img")
        try ImageFile.create(path: path, size: 8192, overwrite: false)
        let first = try ImageLock.acquire(path: path)
        #expect(first.isHeld)
        #expect(!first.createdFile)
        let error = try #require(throws: SystemError.self) { _ = try ImageLock.acquire(path: path) }
        #expect(error.code == .locked)
        #expect(error.detail.contains(path))
        #expect(error.detail.contains("PID \(getpid())"), "\(error)")
        #expect(error.detail.contains("wait for PID \(getpid()) to finish, or stop it"), "\(error)")
        let command = CommandLine.arguments[0].split(separator: "/").last.map(String.init) ?? ""
        #expect(error.detail.contains(command), "the holder's command line: \(error)")
        #expect(ImageLock.conflict(path: path)?.code == .locked)
        #expect(try ImageFile.size(path: path) == 8192, "a refused lock touches nothing")
        first.release()
        #expect(!first.isHeld)
        #expect(ImageLock.conflict(path: path) == nil)
        let second = try ImageLock.acquire(path: path)
        second.release()
    }

    /// The sidecar names the holder while the lock is held and goes with the lock.
    @Test func sidecarNamesTheHolderAndGoesWithTheLock() throws {
        let scratch = Scratch("lock-sidecar")
        let path = scratch.file("guest.img")
        try ImageFile.create(path: path, size: 4096, overwrite: false)
        let lock = try ImageLock.acquire(path: path)
        let sidecar = try String(contentsOfFile: ImageLock.sidecarPath(for: path), encoding: .utf8)
        #expect(sidecar.hasPrefix("pid \(getpid()) start "), "\(sidecar)")
        #expect(sidecar.contains("inode \(lock.inode)"))
        lock.release()
        #expect(!ImageFile.exists(path: ImageLock.sidecarPath(for: path)))
    }

    /// A sidecar left behind (its holder was killed) never blocks: the lock is the truth.
    @Test func staleSidecarDoesNotBlock() throws {
        let scratch = Scratch("lock-stale")
        let path = scratch.file("guest.img")
        try ImageFile.create(path: path, size: 4096, overwrite: false)
        let sidecar = ImageLock.sidecarPath(for: path)
        try "pid 999999 start 1 device 1 inode 1\nferry send --image \(path)\n".write(
            toFile: sidecar, atomically: false, encoding: .utf8)
        let lock = try ImageLock.acquire(path: path)
        let text = try String(contentsOfFile: sidecar, encoding: .utf8)
        #expect(text.hasPrefix("pid \(getpid()) "), "the new holder names itself: \(text)")
        lock.release()
    }

    /// With its sidecar gone or wrong, the holder is still found: in /proc/PID/fdinfo.
    @Test func holderWithoutSidecarIsFoundInProc() throws {
        let scratch = Scratch("lock-proc")
        let path = scratch.file("guest.img")
        try ImageFile.create(path: path, size: 4096, overwrite: false)
        let lock = try ImageLock.acquire(path: path)
        defer { lock.release() }
        try "pid 1 start 1 device \(lock.device) inode \(lock.inode)\nsomeone else\n".write(
            toFile: ImageLock.sidecarPath(for: path), atomically: false, encoding: .utf8)
        let error = try #require(throws: SystemError.self) { _ = try ImageLock.acquire(path: path) }
        #expect(error.detail.contains("PID \(getpid())"), "\(error)")
        #expect(!error.detail.contains("someone else"))
    }

    /// `create` makes a missing file (empty, never truncating one that exists); without it a
    /// missing file is ENOENT. `release(removingFile:)` removes it; `moved(to:)` follows a rename.
    @Test func createsRemovesAndFollowsARename() throws {
        let scratch = Scratch("lock-create")
        let path = scratch.file("guest.img.partial")
        let missing = try #require(throws: SystemError.self) { _ = try ImageLock.acquire(path: path) }
        #expect(missing.errno == .noSuchFileOrDirectory)
        #expect(!ImageFile.exists(path: path))
        let lock = try ImageLock.acquire(path: path, create: true)
        #expect(lock.createdFile)
        #expect(try ImageFile.size(path: path) == 0)
        let final = scratch.file("guest.img")
        try ImageFile.rename(from: path, to: final)
        lock.moved(to: final)
        #expect(lock.path == final)
        #expect(ImageLock.conflict(path: final)?.detail.contains("PID \(getpid())") == true)
        #expect(!ImageFile.exists(path: ImageLock.sidecarPath(for: path)))
        #expect(ImageFile.exists(path: ImageLock.sidecarPath(for: final)))
        lock.release(removingFile: true)
        #expect(!ImageFile.exists(path: final))
        #expect(!ImageFile.exists(path: ImageLock.sidecarPath(for: final)))

        try ImageFile.create(path: path, size: 4096, overwrite: false)
        let existing = try ImageLock.acquire(path: path, create: true)
        #expect(!existing.createdFile)
        #expect(try ImageFile.size(path: path) == 4096, "create never truncates")
        existing.release()
        #expect(ImageFile.exists(path: path))
    }
}
