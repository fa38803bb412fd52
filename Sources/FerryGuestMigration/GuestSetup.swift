import FerryGuest
import FerryMigration

/// Everything needed to build the built-in guest besides its memory and registers, in the two
/// forms it takes: command-line text on the source, a GUEST_CONFIG frame on the destination.
public struct GuestSetup: Sendable {
    public var configuration: GuestConfiguration
    /// The workload as the user wrote it (travels in GUEST_CONFIG).
    public var workloadText: String
    /// Contents of the trace file for `trace:` workloads (travels in GUEST_CONFIG).
    public var traceBytes: [UInt8]

    /// Source side: parse the user's workload; a `trace:` workload's file is read here.
    public static func make(workload: String, vcpus: Int, seed: UInt64, pageSize: Int, pageCount: Int) throws
        -> GuestSetup
    {
        guard workload.utf8.count <= 1024 else {
            throw MigrationError(
                .configuration,
                "--workload is \(workload.utf8.count) bytes long; at most 1024 can travel with the guest",
                guest: .source)
        }
        var traceText: String?
        if case .trace(let path) = try WorkloadSpec.parse(workload) {
            traceText = try DirtyTrace.readFile(path: path)
        }
        let configuration = try GuestConfiguration.make(
            vcpus: vcpus, workload: workload, traceText: traceText, seed: seed,
            pageSize: pageSize, pageCount: pageCount)
        return GuestSetup(
            configuration: configuration, workloadText: workload, traceBytes: Array((traceText ?? "").utf8))
    }

    /// Destination side: rebuild the guest's configuration from what the source sent.
    static func make(from description: GuestDescription, vcpus: Int, pageSize: Int, pageCount: Int) throws -> GuestSetup
    {
        let configuration = try GuestConfiguration.make(
            vcpus: vcpus, workload: description.parameters,
            traceText: String(decoding: description.attachment, as: UTF8.self),
            seed: description.seed, pageSize: pageSize, pageCount: pageCount)
        return GuestSetup(
            configuration: configuration, workloadText: description.parameters, traceBytes: description.attachment)
    }

    /// What travels in GUEST_CONFIG.
    public var description: GuestDescription {
        GuestDescription(seed: configuration.seed, parameters: workloadText, attachment: traceBytes)
    }
}
