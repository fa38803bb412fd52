import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// Whether a destination takes the guest it is offered.
extension DestinationSession {
    /// Why this destination cannot take the guest, or nil.
    func check(_ hello: Hello) -> (reason: RefusalReason, message: String)? {
        if !(hello.versionMin...hello.versionMax).contains(ProtocolLimits.version) {
            return (.version, "source speaks protocol versions \(hello.versionMin)-\(hello.versionMax), this destination speaks \(ProtocolLimits.version); upgrade one side")
        }
        if Int(hello.pageSize) != systemPageSize {
            return (.pageSize, "guest page size \(hello.pageSize) differs from this host's \(systemPageSize)")
        }
        if hello.cpuStateFormat != 1 || hello.guestKind != 1 || !hello.codecs.contains([.zero, .raw]) {
            return (.unsupported, "guest kind \(hello.guestKind), CPU-state format \(hello.cpuStateFormat) or codecs \(hello.codecs.rawValue) not supported here")
        }
        if ImageFile.exists(path: options.imagePath) && !options.force {
            return (.imageExists, "image \(options.imagePath) exists on the destination; start ferry receive with --force to overwrite it")
        }
        let size = hello.imageSize
        if let free = try? ImageFile.freeBytes(directoryOf: options.imagePath), free < size {
            return (.disk, "image needs \(size) bytes but only \(free) are free in the directory of \(options.imagePath)")
        }
        if let memory = try? availableMemoryBytes(), memory < size {
            return (.memory, "guest needs \(size) bytes of memory but only \(memory) are available here")
        }
        return nil
    }
}
