import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// Who and what a destination admits: the guest it is offered, and the page streams that join.
extension DestinationAgent {
    /// Accepts the source's `count` extra page streams: each must open with a `JOIN` naming this
    /// session and an unused stream index. Connections that do not are closed and do not count.
    func joinStreams(_ listener: TCPListener, count: Int, sessionID: UInt64, log: Logger) throws -> [(Int, FramedConnection)] {
        var joined: [Int: FramedConnection] = [:]
        var strangers = 0
        do {
            while joined.count < count {
                let stream = try listener.accept(timeoutMs: 10_000)
                try stream.setReceiveTimeout(ms: 5_000)
                let candidate = FramedConnection(stream)
                guard let join = try? candidate.receive(Join.self), join.sessionID == sessionID,
                      Int(join.streamIndex) <= count, joined[Int(join.streamIndex)] == nil else {
                    candidate.close()
                    strangers += 1
                    log.warning("closed a connection that did not join this migration's page streams",
                                metadata: ["migration.peer": "\(stream.peerDescription)"])
                    if strangers > 16 {
                        throw MigrationError(.protocolViolation, "\(strangers) connections failed to join as page streams", guest: .notHere)
                    }
                    continue
                }
                try stream.setReceiveTimeout(ms: options.receiveTimeoutMs)
                joined[Int(join.streamIndex)] = candidate
            }
        } catch {
            for connection in joined.values { connection.close() }
            throw error
        }
        return joined.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

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
