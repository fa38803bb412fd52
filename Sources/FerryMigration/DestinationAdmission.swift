import FerryKVM
import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// Whether a destination takes the guest it is offered.
extension DestinationSession {
    /// Why this destination cannot take the guest, or nil. When it takes it, the image's disk
    /// space is promised to it in `registry` (`promisedDisk` bytes; the caller releases them).
    func check(_ hello: Hello, promisedDisk: inout UInt64) -> (reason: RefusalReason, message: String)? {
        if !(hello.versionMin...hello.versionMax).contains(ProtocolLimits.version) {
            return (.version, "source speaks protocol versions \(hello.versionMin)-\(hello.versionMax), this destination speaks \(ProtocolLimits.version); upgrade one side")
        }
        if Int(hello.pageSize) != systemPageSize {
            return (.pageSize, "guest page size \(hello.pageSize) differs from this host's \(systemPageSize)")
        }
        let builtin = hello.guestKind == GuestKind.builtin && hello.cpuStateFormat == CPUState.builtinFormat
        let kvm = hello.guestKind == GuestKind.kvm && hello.cpuStateFormat == KVMVCPUState.cpuStateFormat
        if !(builtin || kvm) || !hello.codecs.contains([.zero, .raw]) {
            return (.unsupported, "guest kind \(hello.guestKind), CPU-state format \(hello.cpuStateFormat) or codecs \(hello.codecs.rawValue) not supported here")
        }
        if kvm, let why = KVMDevice.unavailableReason() {
            return (.unsupported, "the guest is a KVM guest (guest kind 2) and KVM is not usable on this destination: \(why)")
        }
        if ImageFile.exists(path: options.imagePath) && !options.force {
            return (.imageExists, "image \(options.imagePath) exists on the destination; start ferry receive with --force to overwrite it")
        }
        let size = hello.imageSize
        if let memory = try? availableMemoryBytes(), memory < size {
            return (.memory, "guest needs \(size) bytes of memory but only \(memory) are available here")
        }
        // Last, as it promises the space: counting what earlier migrations were promised but have
        // not allocated yet, so that two guests are never promised the same free bytes.
        let path = options.imagePath
        if let disk = registry.promiseDisk(size, free: { try ImageFile.freeBytes(directoryOf: path) }) {
            guard disk.promised else {
                let directory = ImageFile.parentDirectory(of: path)
                let others = disk.promisedToOthers > 0 ? ", \(disk.promisedToOthers) of them promised to migrations in progress" : ""
                return (.disk, "image needs \(size) bytes in \(directory) but only \(disk.free) are free there\(others); free some space or receive into another directory")
            }
            promisedDisk = size
        }
        return nil
    }
}
