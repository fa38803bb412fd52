import FerryGuest
import FerrySystem
import Glibc
import Synchronization

/// The KVM guest's paravirtual block device (docs/disk.md): a raw disk file the VMM reads and
/// writes for the guest, one request at a time per vCPU, synchronously in the MMIO exit of
/// `REG_DISK_REQUEST`. The request and its status live in guest memory, so the device holds no
/// state of its own beyond the open file: nothing to migrate but the disk's path.
///
/// Holds the disk's `ImageLock` while attached (one writer at a time). `Sendable`: the file is
/// used with pread/pwrite/fdatasync only, which the kernel serialises per call; the lock and the
/// "released" flag are behind a mutex.
public final class KVMDisk: Sendable {
    public let path: String
    /// Capacity in 512-byte sectors.
    public let sectors: UInt64
    private let file: PositionedFile
    private let lock: Mutex<ImageLock?>

    public static let sectorSize = 512
    /// Most sectors one request moves (1 MiB).
    static let maxSectors: UInt32 = 2048

    // Commands and statuses (layout.h).
    static let commandRead: UInt32 = 1
    static let commandWrite: UInt32 = 2
    static let commandFlush: UInt32 = 3
    enum Status: UInt32 {
        case ok = 0
        case noDisk = 1
        case outOfRange = 2
        case badBuffer = 3
        case ioError = 4
        case badCommand = 5
    }
    /// The request's size in guest memory: u64 sector, u32 count, u32 command, u64 buffer,
    /// u32 status, u32 reserved.
    static let requestSize = 32

    /// Opens and locks the disk at `path` (it must exist; a whole number of sectors).
    public init(path: String) throws(KVMError) {
        let lock: ImageLock
        let size: Int
        do throws(SystemError) {
            lock = try ImageLock.acquire(path: path)
            file = try PositionedFile(updating: path)
            size = try file.size()
        } catch {
            throw KVMError(.syscall, failed: error, detail: "the KVM guest's disk \(path)")
        }
        guard size > 0, size % Self.sectorSize == 0 else {
            lock.release()
            throw KVMError(
                .invalidConfiguration, "disk \(path) has \(size) bytes: a disk is a positive number of 512-byte sectors"
            )
        }
        self.lock = Mutex(lock)
        sectors = UInt64(size / Self.sectorSize)
        self.path = path
    }

    /// The disk at `path` for a guest that boots on it: created sparse with `sizeBytes` if
    /// missing (a disk that exists keeps its size), then opened and locked. The program finds its
    /// journal there and prints where it resumed (docs/disk.md).
    public static func opening(path: String, sizeBytes: Int) throws -> KVMDisk {
        try DiskJournal.createDisk(path: path, bytes: sizeBytes)
        return try KVMDisk(path: path)
    }

    /// Checks, before a handover, that `init(path:)` will succeed here with `sectors`: the file
    /// exists with that capacity and no one holds its lock. Takes no lock.
    public static func checkOpenable(path: String, sectors: UInt64) throws(KVMError) {
        if let conflict = ImageLock.conflict(path: path) {
            throw KVMError(.syscall, failed: conflict, detail: "the KVM guest's disk \(path)")
        }
        let size: Int
        do {
            size = try ImageFile.size(path: path)
        } catch let error as SystemError {
            throw KVMError(
                .syscall, failed: error, detail: "the KVM guest's disk must be at the same path here (shared storage)")
        } catch {
            throw KVMError(.invalidConfiguration, "the KVM guest's disk \(path): \(error)")
        }
        guard UInt64(size) == sectors * UInt64(sectorSize) else {
            throw KVMError(
                .invalidConfiguration,
                "disk \(path) has \(size) bytes here, \(sectors * UInt64(sectorSize)) on the source: both ends must see the same disk"
            )
        }
    }

    /// Makes every completed write durable (`fdatasync`).
    public func sync() throws(KVMError) {
        do throws(SystemError) {
            try file.sync()
        } catch {
            throw KVMError(.syscall, failed: error, detail: "flushing the KVM guest's disk")
        }
    }

    /// Gives the disk's lock up (the handover: the destination opens it next). Idempotent.
    public func release() {
        lock.withLock { lock in
            lock?.release()
            lock = nil
        }
    }

    /// Takes the lock again after `release()` (a failed handover); throws when another writer has it.
    public func reacquire() throws(KVMError) {
        let result = lock.withLock { lock -> Result<Void, SystemError> in
            guard lock == nil else { return .success(()) }
            do throws(SystemError) {
                lock = try ImageLock.acquire(path: path)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        do throws(SystemError) {
            try result.get()
        } catch {
            throw KVMError(.syscall, failed: error, detail: "taking the KVM guest's disk back")
        }
    }

    public var isLocked: Bool { lock.withLock { $0 != nil } }

    /// Carries out the request at guest-physical `address` in `machine`'s memory and stores its
    /// status there. A read's bytes and the status are host writes: recorded for the dirty log.
    /// nil when the request could be read, else why not (the guest is broken).
    func serve(requestAt address: Int, machine: KVMVirtualMachine) -> String? {
        guard address >= 0, address % 8 == 0, address + Self.requestSize <= machine.size else {
            return "disk request at 0x\(String(address, radix: 16)) is not 8-aligned inside guest memory"
        }
        let request = machine.memory + address
        let sector = UInt64(littleEndian: request.load(as: UInt64.self))
        let count = UInt32(littleEndian: request.load(fromByteOffset: 8, as: UInt32.self))
        let command = UInt32(littleEndian: request.load(fromByteOffset: 12, as: UInt32.self))
        let buffer = UInt64(littleEndian: request.load(fromByteOffset: 16, as: UInt64.self))
        let status = perform(command: command, sector: sector, count: count, buffer: buffer, machine: machine)
        request.storeBytes(of: status.rawValue.littleEndian, toByteOffset: 24, as: UInt32.self)
        machine.hostWrites.record(bytes: (address + 24)..<(address + 28))
        return nil
    }

    private func perform(command: UInt32, sector: UInt64, count: UInt32, buffer: UInt64, machine: KVMVirtualMachine)
        -> Status
    {
        if command == Self.commandFlush { return (try? sync()) == nil ? .ioError : .ok }
        guard command == Self.commandRead || command == Self.commandWrite else { return .badCommand }
        guard count > 0, count <= Self.maxSectors, sector < sectors, UInt64(count) <= sectors - sector else {
            return .outOfRange
        }
        let bytes = Int(count) * Self.sectorSize
        guard buffer < UInt64(machine.size), UInt64(bytes) <= UInt64(machine.size) - buffer else { return .badBuffer }
        let memory = machine.memory + Int(buffer)
        let offset = Int(sector) * Self.sectorSize
        do throws(SystemError) {
            if command == Self.commandRead {
                let got = try file.read(at: offset, into: UnsafeMutableRawBufferPointer(start: memory, count: bytes))
                if got < bytes { (memory + got).initializeMemory(as: UInt8.self, repeating: 0, count: bytes - got) }
                // The VMM wrote guest memory: KVM's dirty log does not see it.
                machine.hostWrites.record(bytes: Int(buffer)..<(Int(buffer) + bytes))
            } else {
                try file.write(UnsafeRawBufferPointer(start: memory, count: bytes), at: offset)
            }
            return .ok
        } catch {
            return .ioError
        }
    }
}

/// The disk a guest's vCPUs serve, shared by the guest and its vCPU threads (set before they start).
final class KVMDiskSlot: Sendable {
    private let slot = Mutex<KVMDisk?>(nil)
    var disk: KVMDisk? {
        get { slot.withLock { $0 } }
        set { slot.withLock { $0 = newValue } }
    }
}
