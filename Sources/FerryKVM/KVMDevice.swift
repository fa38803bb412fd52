import CKVM
import FerrySystem
import Glibc

/// An open `/dev/kvm` with the facts the VMM needs: the API version and the MSRs this host's
/// KVM can save and restore.
///
/// `@unchecked Sendable`: immutable after `init`; the file descriptor is only used for ioctls
/// that the kernel serialises.
public final class KVMDevice: @unchecked Sendable {
    public static let path = "/dev/kvm"
    let fd: Int32
    /// The candidate MSRs (`KVMVCPUState.candidateMSRs`) that KVM lists in KVM_GET_MSR_INDEX_LIST.
    let savedMSRs: [UInt32]
    let runAreaSize: Int
    /// The largest vCPU count KVM recommends (KVM_CAP_NR_VCPUS).
    public let recommendedVCPUs: Int

    public init() throws(KVMError) {
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("open(\(Self.path))") { open(Self.path, O_RDWR | O_CLOEXEC) }
        } catch {
            throw KVMError(
                .unavailable, failed: error,
                detail:
                    "needs KVM (a kernel with kvm_intel/kvm_amd loaded, nested virtualisation in a VM) and read-write access to \(Self.path)"
            )
        }
        self.fd = fd
        do throws(KVMError) {
            let version = try kvmCall("ioctl(KVM_GET_API_VERSION)") { ckvm_ioctl_value(fd, CKVM_GET_API_VERSION, 0) }
            guard version == 12 else {
                throw KVMError(.unavailable, "KVM API version \(version); Ferry needs the stable API 12")
            }
            for (cap, name) in [
                (CKVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"), (CKVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"),
                (CKVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"),
                (CKVM_CAP_XSAVE, "KVM_CAP_XSAVE"), (CKVM_CAP_XCRS, "KVM_CAP_XCRS"),
                (CKVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"), (CKVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS"),
            ] {
                let has = try kvmCall("ioctl(KVM_CHECK_EXTENSION, \(name))") {
                    ckvm_ioctl_value(fd, CKVM_CHECK_EXTENSION, UInt(cap))
                }
                guard has > 0 else {
                    throw KVMError(
                        .unavailable, "this kernel's KVM lacks \(name), which Ferry's KVM guest needs (Linux 5.8+)")
                }
            }
            recommendedVCPUs = Int(
                try kvmCall("ioctl(KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS)") {
                    ckvm_ioctl_value(fd, CKVM_CHECK_EXTENSION, UInt(CKVM_CAP_NR_VCPUS))
                })
            runAreaSize = Int(
                try kvmCall("ioctl(KVM_GET_VCPU_MMAP_SIZE)") { ckvm_ioctl_value(fd, CKVM_GET_VCPU_MMAP_SIZE, 0) })
            var listed = [UInt32](repeating: 0, count: 4096)
            let count = try kvmCall("ioctl(KVM_GET_MSR_INDEX_LIST)") {
                listed.withUnsafeMutableBufferPointer { ckvm_msr_index_list(fd, $0.baseAddress, UInt32($0.count)) }
            }
            let available = Set(listed.prefix(Int(count)))
            savedMSRs = KVMVCPUState.candidateMSRs.filter { available.contains($0) }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// nil when `/dev/kvm` opens and has what the KVM guest needs, else why not (for test skips
    /// and error messages).
    public static func unavailableReason() -> String? {
        do throws(KVMError) {
            _ = try KVMDevice()
            return nil
        } catch {
            return error.message
        }
    }
}
