#include "CKVM.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

_Static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs ABI");
_Static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs ABI");
_Static_assert(sizeof(struct kvm_xsave) == 4096, "kvm_xsave ABI (fixed part)");
_Static_assert(sizeof(struct kvm_xcrs) == 392, "kvm_xcrs ABI");
_Static_assert(sizeof(struct kvm_vcpu_events) == 64, "kvm_vcpu_events ABI");
_Static_assert(sizeof(struct kvm_mp_state) == 4, "kvm_mp_state ABI");
_Static_assert(sizeof(struct kvm_debugregs) == 128, "kvm_debugregs ABI");

int ckvm_ioctl_pointer(int fd, unsigned long request, void *arg) {
    int rc = ioctl(fd, request, arg);
    return rc < 0 ? -errno : rc;
}

int ckvm_ioctl_value(int fd, unsigned long request, unsigned long value) {
    int rc = ioctl(fd, request, value);
    return rc < 0 ? -errno : rc;
}

int ckvm_set_memory_region(int vm_fd, uint32_t slot, uint32_t flags, uint64_t guest_physical,
                           uint64_t size, void *host_address) {
    struct kvm_userspace_memory_region region = {
        .slot = slot,
        .flags = flags,
        .guest_phys_addr = guest_physical,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)host_address,
    };
    return ckvm_ioctl_pointer(vm_fd, KVM_SET_USER_MEMORY_REGION, &region);
}

int ckvm_enable_vm_cap(int vm_fd, uint32_t cap, uint64_t arg0) {
    struct kvm_enable_cap enable;
    memset(&enable, 0, sizeof enable);
    enable.cap = cap;
    enable.args[0] = arg0;
    return ckvm_ioctl_pointer(vm_fd, KVM_ENABLE_CAP, &enable);
}

int ckvm_set_supported_cpuid(int kvm_fd, int vcpu_fd) {
    enum { capacity = 256 };
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + capacity * sizeof(struct kvm_cpuid_entry2));
    if (cpuid == NULL) return -ENOMEM;
    cpuid->nent = capacity;
    int rc = ckvm_ioctl_pointer(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid);
    if (rc >= 0) rc = ckvm_ioctl_pointer(vcpu_fd, KVM_SET_CPUID2, cpuid);
    free(cpuid);
    return rc < 0 ? rc : 0;
}

int ckvm_msr_index_list(int kvm_fd, uint32_t *out, uint32_t capacity) {
    struct kvm_msr_list *list = calloc(1, sizeof *list + capacity * sizeof(uint32_t));
    if (list == NULL) return -ENOMEM;
    list->nmsrs = capacity;
    int rc = ckvm_ioctl_pointer(kvm_fd, KVM_GET_MSR_INDEX_LIST, list);
    if (rc >= 0) {
        memcpy(out, list->indices, list->nmsrs * sizeof(uint32_t));
        rc = (int)list->nmsrs;
    }
    free(list);
    return rc;
}

enum { ckvm_max_msrs = 64 };

// struct kvm_msrs with room for the entries (its own flexible array cannot be embedded).
struct ckvm_msr_buffer {
    struct {
        uint32_t nmsrs;
        uint32_t pad;
    } header;
    struct kvm_msr_entry entries[ckvm_max_msrs];
};
_Static_assert(offsetof(struct ckvm_msr_buffer, entries) == offsetof(struct kvm_msrs, entries), "kvm_msrs layout");

int ckvm_get_msrs(int vcpu_fd, const uint32_t *indices, uint64_t *values, uint32_t count) {
    if (count > ckvm_max_msrs) return -E2BIG;
    struct ckvm_msr_buffer buffer;
    memset(&buffer, 0, sizeof buffer);
    buffer.header.nmsrs = count;
    for (uint32_t i = 0; i < count; i++) buffer.entries[i].index = indices[i];
    int rc = ckvm_ioctl_pointer(vcpu_fd, KVM_GET_MSRS, &buffer);
    if (rc < 0) return rc;
    for (int i = 0; i < rc; i++) values[i] = buffer.entries[i].data;
    return rc;
}

int ckvm_set_msrs(int vcpu_fd, const uint32_t *indices, const uint64_t *values, uint32_t count) {
    if (count > ckvm_max_msrs) return -E2BIG;
    struct ckvm_msr_buffer buffer;
    memset(&buffer, 0, sizeof buffer);
    buffer.header.nmsrs = count;
    for (uint32_t i = 0; i < count; i++) {
        buffer.entries[i].index = indices[i];
        buffer.entries[i].data = values[i];
    }
    return ckvm_ioctl_pointer(vcpu_fd, KVM_SET_MSRS, &buffer);
}

int ckvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap) {
    struct kvm_dirty_log log;
    memset(&log, 0, sizeof log);
    log.slot = slot;
    log.dirty_bitmap = bitmap;
    return ckvm_ioctl_pointer(vm_fd, KVM_GET_DIRTY_LOG, &log);
}

int ckvm_clear_dirty_log(int vm_fd, uint32_t slot, uint64_t first_page, uint32_t page_count,
                         uint64_t *bitmap) {
    struct kvm_clear_dirty_log clear;
    memset(&clear, 0, sizeof clear);
    clear.slot = slot;
    clear.first_page = first_page;
    clear.num_pages = page_count;
    clear.dirty_bitmap = bitmap;
    return ckvm_ioctl_pointer(vm_fd, KVM_CLEAR_DIRTY_LOG, &clear);
}

uint32_t ckvm_run_exit_reason(const void *run) {
    return ((const volatile struct kvm_run *)run)->exit_reason;
}

void ckvm_run_mmio(void *run, uint64_t *address, uint32_t *length, uint8_t *is_write, void **data) {
    struct kvm_run *r = run;
    *address = r->mmio.phys_addr;
    *length = r->mmio.len;
    *is_write = r->mmio.is_write;
    *data = r->mmio.data;
}

uint64_t ckvm_run_failure_detail(const void *run) {
    const struct kvm_run *r = run;
    if (r->exit_reason == KVM_EXIT_FAIL_ENTRY) return r->fail_entry.hardware_entry_failure_reason;
    if (r->exit_reason == KVM_EXIT_INTERNAL_ERROR) return r->internal.suberror;
    return 0;
}

void ckvm_run_set_immediate_exit(void *run, uint8_t value) {
    __atomic_store_n(&((struct kvm_run *)run)->immediate_exit, value, __ATOMIC_SEQ_CST);
}

static void ckvm_kick_handler(int signal) {
    (void)signal;
}

int ckvm_install_kick_handler(int signal) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = ckvm_kick_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    return sigaction(signal, &action, NULL) < 0 ? -errno : 0;
}

int ckvm_realtime_signal(int offset) {
    return SIGRTMIN + offset;
}
