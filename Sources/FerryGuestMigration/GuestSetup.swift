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

    /// Source side: parse the user's workload. A `trace:` workload's file is checked here: with
    /// `attachTrace` (a guest that migrates) it is read whole to travel in GUEST_CONFIG, which
    /// holds at most 16 MiB (a longer trace is refused before the guest starts); without (`ferry
    /// run`, reference runs) it is streamed from the file, whatever its length.
    public static func make(
        workload: String, vcpus: Int, seed: UInt64, pageSize: Int, pageCount: Int, attachTrace: Bool = true
    ) throws -> GuestSetup {
        guard workload.utf8.count <= 1024 else {
            throw MigrationError(
                .configuration,
                "--workload is \(workload.utf8.count) bytes long; at most 1024 can travel with the guest",
                guest: .source)
        }
        let spec = try WorkloadSpec.parse(workload)
        guard case .trace(let path) = spec else {
            let configuration = try GuestConfiguration.make(
                vcpus: vcpus, workload: workload, seed: seed, pageSize: pageSize, pageCount: pageCount)
            return GuestSetup(configuration: configuration, workloadText: workload, traceBytes: [])
        }
        let bytes = attachTrace ? try DirtyTrace.readAttachment(path: path) : []
        let trace =
            attachTrace
            ? try DirtyTrace.parse(bytes: bytes, pageCount: pageCount)
            : try DirtyTrace.load(path: path, pageCount: pageCount)
        let configuration = GuestConfiguration(
            vcpus: vcpus, workload: spec, trace: trace, seed: seed, pageSize: pageSize)
        return GuestSetup(configuration: configuration, workloadText: workload, traceBytes: bytes)
    }

    /// Destination side: rebuild the guest's configuration from what the source sent.
    static func make(from description: GuestDescription, vcpus: Int, pageSize: Int, pageCount: Int) throws -> GuestSetup
    {
        let spec = try WorkloadSpec.parse(description.parameters)
        var trace: DirtyTrace?
        if case .trace = spec { trace = try DirtyTrace.parse(bytes: description.attachment, pageCount: pageCount) }
        let configuration = GuestConfiguration(
            vcpus: vcpus, workload: spec, trace: trace, seed: description.seed, pageSize: pageSize)
        return GuestSetup(
            configuration: configuration, workloadText: description.parameters, traceBytes: description.attachment)
    }

    /// What travels in GUEST_CONFIG.
    public var description: GuestDescription {
        GuestDescription(seed: configuration.seed, parameters: workloadText, attachment: traceBytes)
    }
}
