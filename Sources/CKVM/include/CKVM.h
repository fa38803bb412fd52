#ifndef CKVM_H
#define CKVM_H

// C side of FerryKVM: the KVM ioctl request numbers (the _IO/_IOR/_IOW macros do not import
// into Swift), the structs with flexible arrays or anonymous unions (kvm_cpuid2, kvm_msrs,
// kvm_dirty_log, kvm_run), and the vCPU kick signal handler.
//
// Return convention (the one of every Ferry C shim, CFerryShims' too): 0, or a non-negative
// result, on success; -errno on failure. None report errors through errno, and none retry EINTR:
// the Swift side calls them through FerrySystem's valueOrErrno(_:.negatedErrno), which does
// (except for KVM_RUN, whose EINTR means "kicked"). The ckvm_run_* accessors and
// ckvm_realtime_signal cannot fail and return their value directly.

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - request numbers

static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
static const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long CKVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long CKVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
static const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;

static const int CKVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
static const int CKVM_CAP_USER_MEMORY = KVM_CAP_USER_MEMORY;
static const int CKVM_CAP_XSAVE = KVM_CAP_XSAVE;
static const int CKVM_CAP_XCRS = KVM_CAP_XCRS;
static const int CKVM_CAP_VCPU_EVENTS = KVM_CAP_VCPU_EVENTS;
static const int CKVM_CAP_DEBUGREGS = KVM_CAP_DEBUGREGS;
static const int CKVM_CAP_IMMEDIATE_EXIT = KVM_CAP_IMMEDIATE_EXIT;
static const int CKVM_CAP_NR_VCPUS = KVM_CAP_NR_VCPUS;
static const uint64_t CKVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
static const uint64_t CKVM_DIRTY_LOG_INITIALLY_SET = KVM_DIRTY_LOG_INITIALLY_SET;
static const uint32_t CKVM_MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES;

static const uint32_t CKVM_EXIT_IO = KVM_EXIT_IO;
static const uint32_t CKVM_EXIT_HLT = KVM_EXIT_HLT;
static const uint32_t CKVM_EXIT_SHUTDOWN = KVM_EXIT_SHUTDOWN;
static const uint32_t CKVM_EXIT_FAIL_ENTRY = KVM_EXIT_FAIL_ENTRY;
static const uint32_t CKVM_EXIT_INTERNAL_ERROR = KVM_EXIT_INTERNAL_ERROR;
static const uint32_t CKVM_EXIT_MMIO = KVM_EXIT_MMIO;
static const uint32_t CKVM_EXIT_INTR = KVM_EXIT_INTR;

static const uint32_t CKVM_VCPUEVENT_VALID_NMI_PENDING = KVM_VCPUEVENT_VALID_NMI_PENDING;
static const uint32_t CKVM_VCPUEVENT_VALID_SHADOW = KVM_VCPUEVENT_VALID_SHADOW;

// MARK: - plain ioctls

/// ioctl(fd, request, arg) with a pointer argument; -errno on failure.
int ckvm_ioctl_pointer(int fd, unsigned long request, void *arg);
/// ioctl(fd, request, value) with an integer argument; the (non-negative) result or -errno.
int ckvm_ioctl_value(int fd, unsigned long request, unsigned long value);

// MARK: - VM setup

/// KVM_SET_USER_MEMORY_REGION for one slot.
int ckvm_set_memory_region(int vm_fd, uint32_t slot, uint32_t flags, uint64_t guest_physical,
                           uint64_t size, void *host_address);
/// KVM_ENABLE_CAP on the VM with one argument.
int ckvm_enable_vm_cap(int vm_fd, uint32_t cap, uint64_t arg0);
/// KVM_GET_SUPPORTED_CPUID on /dev/kvm then KVM_SET_CPUID2 on the vCPU: the guest sees every
/// CPUID leaf this host's KVM supports.
int ckvm_set_supported_cpuid(int kvm_fd, int vcpu_fd);

// MARK: - MSRs

/// KVM_GET_MSR_INDEX_LIST: up to `capacity` indices into `out`; returns the count or -errno
/// (-E2BIG when `capacity` is too small).
int ckvm_msr_index_list(int kvm_fd, uint32_t *out, uint32_t capacity);
/// KVM_GET_MSRS for `count` (≤ 64) indices; returns how many leading entries were read.
int ckvm_get_msrs(int vcpu_fd, const uint32_t *indices, uint64_t *values, uint32_t count);
/// KVM_SET_MSRS for `count` (≤ 64) entries; returns how many leading entries were written.
int ckvm_set_msrs(int vcpu_fd, const uint32_t *indices, const uint64_t *values, uint32_t count);

// MARK: - dirty log

/// KVM_GET_DIRTY_LOG of `slot` into `bitmap` (one bit per page of the slot, 64-bit words).
int ckvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap);
/// KVM_CLEAR_DIRTY_LOG: clears and write-protects the pages of `slot` whose bits are set in
/// `bitmap`, which covers pages [first_page, first_page + page_count); first_page must be a
/// multiple of 64 and page_count too unless the range reaches the end of the slot.
int ckvm_clear_dirty_log(int vm_fd, uint32_t slot, uint64_t first_page, uint32_t page_count,
                         uint64_t *bitmap);

// MARK: - struct kvm_run (mmap'ed per vCPU)

uint32_t ckvm_run_exit_reason(const void *run);
/// The KVM_EXIT_MMIO fields; `data` points at the run area's 8 data bytes.
void ckvm_run_mmio(void *run, uint64_t *address, uint32_t *length, uint8_t *is_write, void **data);
/// KVM_EXIT_FAIL_ENTRY's hardware reason, KVM_EXIT_INTERNAL_ERROR's suberror.
uint64_t ckvm_run_failure_detail(const void *run);
/// Sets kvm_run.immediate_exit (a volatile store: another thread sets it to kick the vCPU).
void ckvm_run_set_immediate_exit(void *run, uint8_t value);

// MARK: - kick signal

/// Installs a handler that does nothing for `signal` (no SA_RESTART), so a pthread_kill makes
/// the target's KVM_RUN return EINTR. Idempotent.
int ckvm_install_kick_handler(int signal);
/// SIGRTMIN + offset (a macro calling into libc; not importable).
int ckvm_realtime_signal(int offset);

// MARK: - struct sizes (x86-64 KVM ABI; Protocol.md "CPU state format 2")

static const uint32_t CKVM_SIZEOF_REGS = sizeof(struct kvm_regs);
static const uint32_t CKVM_SIZEOF_SREGS = sizeof(struct kvm_sregs);
static const uint32_t CKVM_SIZEOF_XSAVE = sizeof(struct kvm_xsave);
static const uint32_t CKVM_SIZEOF_XCRS = sizeof(struct kvm_xcrs);
static const uint32_t CKVM_SIZEOF_VCPU_EVENTS = sizeof(struct kvm_vcpu_events);
static const uint32_t CKVM_SIZEOF_MP_STATE = sizeof(struct kvm_mp_state);
static const uint32_t CKVM_SIZEOF_DEBUGREGS = sizeof(struct kvm_debugregs);

#ifdef __cplusplus
}
#endif

#endif
