import CKVM
import FerrySystem
import Glibc

/// One KVM virtual machine over caller-owned guest memory: memory slot 0 at guest-physical 0
/// maps `[memory, memory + size)`, with dirty logging on in manual-protect mode (KVM writes
/// nothing-protected at first: every page starts "dirty" and costs the guest nothing until a
/// tracker clears it; see `KVMDirtyTracker`).
///
/// `@unchecked Sendable`: immutable after `init`; the VM fd's ioctls are serialised by the
/// kernel, and `hostWrites` locks itself.
public final class KVMVirtualMachine: @unchecked Sendable {
    public let device: KVMDevice
    let fd: Int32
    public let memory: UnsafeMutableRawPointer
    public let size: Int
    static let memorySlot: UInt32 = 0
    /// Pages the VMM itself wrote (KVM's dirty log sees only the guest's writes).
    let hostWrites: KVMHostWriteLog

    public init(device: KVMDevice, memory: UnsafeMutableRawPointer, size: Int) throws(KVMError) {
        guard size >= KVMGuestLayout.minMemory, size <= KVMGuestLayout.maxMemory, size % KVMGuestLayout.pageSize == 0
        else {
            throw KVMError(
                .invalidConfiguration,
                "guest memory of \(size) bytes: must be a multiple of 4096 between \(KVMGuestLayout.minMemory >> 20) MiB and \(KVMGuestLayout.maxMemory >> 30) GiB"
            )
        }
        guard Int(bitPattern: memory) % systemPageSize == 0 else {
            throw KVMError(.invalidConfiguration, "guest memory at \(memory) is not page-aligned; map it with mmap")
        }
        self.device = device
        self.memory = memory
        self.size = size
        hostWrites = KVMHostWriteLog(pageCount: size / KVMGuestLayout.pageSize)
        let kvm = device.fd
        fd = try kvmCall("ioctl(KVM_CREATE_VM)") { ckvm_ioctl_value(kvm, CKVM_CREATE_VM, 0) }
        do throws(KVMError) {
            // Only Intel needs a TSS area for real mode; AMD accepts and ignores it.
            try kvmCall("ioctl(KVM_SET_TSS_ADDR, 0xfffbd000)") { ckvm_ioctl_value(fd, CKVM_SET_TSS_ADDR, 0xfffb_d000) }
            // Manual protect must be on before the slot exists, so the slot starts all-dirty.
            try kvmCall("ioctl(KVM_ENABLE_CAP, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)") {
                ckvm_enable_vm_cap(
                    fd, UInt32(CKVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
                    CKVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | CKVM_DIRTY_LOG_INITIALLY_SET)
            }
            try kvmCall("ioctl(KVM_SET_USER_MEMORY_REGION, slot 0, \(size) bytes, KVM_MEM_LOG_DIRTY_PAGES)") {
                ckvm_set_memory_region(fd, Self.memorySlot, CKVM_MEM_LOG_DIRTY_PAGES, 0, UInt64(size), memory)
            }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Copies `bytes` into guest memory at guest-physical `address` and records the pages for
    /// the dirty tracker: the way the VMM writes guest memory.
    public func writeGuestMemory(at address: Int, _ bytes: UnsafeRawBufferPointer) {
        precondition(
            address >= 0 && address + bytes.count <= size, "guest write \(address)+\(bytes.count) outside \(size) bytes"
        )
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        (memory + address).copyMemory(from: source, byteCount: bytes.count)
        hostWrites.record(bytes: address..<(address + bytes.count))
    }
}
