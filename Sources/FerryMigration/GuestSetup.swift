import FerryGuest
import FerryProtocol
import Glibc

/// Everything needed to build the built-in guest besides its memory and registers, in the two
/// forms it takes: command-line text on the source, a GUEST_CONFIG frame on the destination.
public struct GuestSetup: Sendable {
    public var configuration: GuestConfiguration
    /// The workload as the user wrote it (travels in GUEST_CONFIG).
    public var workloadText: String
    /// Contents of the trace file for `trace:` workloads (travels in GUEST_CONFIG).
    public var traceBytes: [UInt8]

    /// Source side: parse the user's workload; a `trace:` workload's file is read here.
    public static func make(workload: String, vcpus: Int, seed: UInt64, pageSize: Int, pageCount: Int) throws -> GuestSetup {
        guard (1...ProtocolLimits.maxVCPUs).contains(vcpus) else {
            throw MigrationError(.configuration, "--vcpus \(vcpus): must be between 1 and \(ProtocolLimits.maxVCPUs)", guest: .source)
        }
        let spec = try WorkloadSpec.parse(workload)
        var traceBytes: [UInt8] = []
        var trace: DirtyTrace?
        if case .trace(let path) = spec {
            traceBytes = try readWholeFile(path)
            guard traceBytes.count <= GuestConfig.maxTraceLength else {
                throw MigrationError(.configuration, "trace file \(path) is \(traceBytes.count) bytes; at most \(GuestConfig.maxTraceLength) can travel with the guest", guest: .source)
            }
            trace = try DirtyTrace.parse(String(decoding: traceBytes, as: UTF8.self), pageCount: pageCount)
        }
        let configuration = GuestConfiguration(vcpus: vcpus, workload: spec, trace: trace, seed: seed, pageSize: pageSize)
        return GuestSetup(configuration: configuration, workloadText: workload, traceBytes: traceBytes)
    }

    /// Destination side: rebuild the guest's configuration from what the source sent.
    static func make(from config: GuestConfig, vcpus: Int, pageSize: Int, pageCount: Int) throws -> GuestSetup {
        let spec = try WorkloadSpec.parse(config.workload)
        var trace: DirtyTrace?
        if case .trace = spec {
            trace = try DirtyTrace.parse(String(decoding: config.trace, as: UTF8.self), pageCount: pageCount)
        }
        let configuration = GuestConfiguration(vcpus: vcpus, workload: spec, trace: trace, seed: config.seed, pageSize: pageSize)
        return GuestSetup(configuration: configuration, workloadText: config.workload, traceBytes: config.trace)
    }
}

func readWholeFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        throw MigrationError(.configuration, "cannot open \(path): \(String(cString: strerror(errno)))", guest: .source)
    }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else {
            throw MigrationError(.configuration, "cannot read \(path): \(String(cString: strerror(errno)))", guest: .source)
        }
        if n == 0 { return bytes }
        bytes.append(contentsOf: chunk[0..<n])
        if bytes.count > GuestConfig.maxTraceLength {
            throw MigrationError(.configuration, "\(path) is larger than \(GuestConfig.maxTraceLength) bytes", guest: .source)
        }
    }
}
