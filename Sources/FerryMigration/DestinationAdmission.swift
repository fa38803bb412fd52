import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// Whether a destination takes the guest it is offered.
extension DestinationSession {
    /// Why this destination cannot take the guest, or nil. When it takes it, the image's disk
    /// space is promised to it in `registry` (`promisedDisk` bytes; the caller releases them).
    /// `promise` false (a tentative session): the free space is measured, nothing is promised.
    func check(_ hello: Hello, promisedDisk: inout UInt64, promise: Bool = true) -> (
        reason: RefusalReason, message: String
    )? {
        if !(hello.versionMin...hello.versionMax).contains(ProtocolLimits.version) {
            return (
                .version,
                "source speaks protocol versions \(hello.versionMin)-\(hello.versionMax), this destination speaks \(ProtocolLimits.version); upgrade one side"
            )
        }
        if Int(hello.pageSize) != systemPageSize {
            return (.pageSize, "guest page size \(hello.pageSize) differs from this host's \(systemPageSize)")
        }
        if !hello.codecs.contains([.zero, .raw]) {
            return (
                .unsupported,
                "codecs \(hello.codecs.rawValue) lack the zero marker or raw pages, which every destination needs"
            )
        }
        guard let kind = options.guestKinds[hello.guestKind] else {
            let known = options.guestKinds.summary
            return (
                .unsupported,
                "guest kind \(hello.guestKind) is not received here (this destination takes guest kinds \(known.isEmpty ? "none: no guest kind is registered" : known))"
            )
        }
        if let why = kind.refusal(cpuStateFormat: hello.cpuStateFormat, vcpus: Int(hello.vcpuCount)) {
            return (
                .unsupported,
                "the guest is a \(kind.name) (guest kind \(hello.guestKind)) and this destination cannot take it: \(why)"
            )
        }
        if ImageFile.exists(path: options.imagePath) && !options.force {
            return (
                .imageExists,
                "image \(options.imagePath) exists on the destination; start ferry receive with --force to overwrite it"
            )
        }
        if imageLocks == nil, let holder = DestinationImageLocks.conflict(imagePath: options.imagePath) {
            return (.busy, holder)
        }
        let size = hello.imageSize
        if let memory = try? availableMemoryBytes(), memory < size {
            return (.memory, "guest needs \(size) bytes of memory but only \(memory) are available here")
        }
        let path = options.imagePath
        guard promise else {
            if let free = registry.unpromisedDisk(free: { try ImageFile.freeBytes(directoryOf: path) }), free < size {
                return (.disk, diskMessage(size: size, free: free))
            }
            return nil
        }
        return promiseDisk(size, promisedDisk: &promisedDisk)
    }

    /// Promises the image's disk space in `registry`, counting what earlier migrations were
    /// promised but have not allocated yet, so that two guests are never promised the same free
    /// bytes; the refusal when it does not fit.
    func promiseDisk(_ size: UInt64, promisedDisk: inout UInt64) -> (reason: RefusalReason, message: String)? {
        let path = options.imagePath
        if let disk = registry.promiseDisk(size, free: { try ImageFile.freeBytes(directoryOf: path) }) {
            guard disk.promised else {
                return (.disk, diskMessage(size: size, free: disk.free, promisedToOthers: disk.promisedToOthers))
            }
            promisedDisk = size
        }
        return nil
    }

    private func diskMessage(size: UInt64, free: UInt64, promisedToOthers: UInt64 = 0) -> String {
        let directory = ImageFile.parentDirectory(of: options.imagePath)
        let others = promisedToOthers > 0 ? ", \(promisedToOthers) of them promised to migrations in progress" : ""
        return
            "image needs \(size) bytes in \(directory) but only \(free) are free there\(others); free some space or receive into another directory"
    }
}
