import FerryGuest
import FerryMigration

/// Everything needed to build the built-in guest besides its memory and registers, in the two
/// forms it takes: command-line text on the source, a GUEST_CONFIG frame on the destination.
public struct GuestSetup: Sendable {
    public var configuration: GuestConfiguration
    /// The workload as the user wrote it (travels in GUEST_CONFIG).
    public var workloadText: String
    /// The trace file of a `trace:` workload, whose length and hash GUEST_CONFIG carries and
    /// whose bytes follow it in 1 MiB chunks (Protocol.md 3.25); nil for other workloads.
    public var attachment: GuestAttachment?

    /// Source side: parse the user's workload. A `trace:` workload's file is checked here, and
    /// replayed by streaming it whatever its length; with `attachTrace` (a guest that migrates)
    /// it is also hashed, to travel after GUEST_CONFIG (`ferry run` and reference runs skip that).
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
            return GuestSetup(configuration: configuration, workloadText: workload, attachment: nil)
        }
        let trace = try DirtyTrace.load(path: path, pageCount: pageCount)
        let attachment = attachTrace ? try GuestAttachment.measure(path: path) : nil
        let configuration = GuestConfiguration(
            vcpus: vcpus, workload: spec, trace: trace, seed: seed, pageSize: pageSize)
        return GuestSetup(configuration: configuration, workloadText: workload, attachment: attachment)
    }

    /// Destination side: rebuild the guest's configuration from what the source sent; a trace
    /// is replayed from the attachment file it was received into.
    static func make(from description: GuestDescription, vcpus: Int, pageSize: Int, pageCount: Int) throws -> GuestSetup
    {
        let spec = try WorkloadSpec.parse(description.parameters)
        var trace: DirtyTrace?
        if case .trace = spec {
            guard let attachment = description.attachment else {
                throw MigrationError(
                    .protocolViolation,
                    "the built-in guest's workload '\(description.parameters)' replays a trace, but no trace came with it (GUEST_CONFIG attachment_length 0)",
                    guest: .notHere)
            }
            trace = try DirtyTrace.load(path: attachment.path, pageCount: pageCount)
        }
        let configuration = GuestConfiguration(
            vcpus: vcpus, workload: spec, trace: trace, seed: description.seed, pageSize: pageSize)
        return GuestSetup(
            configuration: configuration, workloadText: description.parameters, attachment: description.attachment)
    }

    /// What travels in GUEST_CONFIG.
    public var description: GuestDescription {
        GuestDescription(seed: configuration.seed, parameters: workloadText, attachment: attachment)
    }
}
