/// The guest's hardware besides memory and registers: what the destination needs to run it.
public struct GuestConfiguration: Sendable {
    /// Number of vCPUs, 1…64.
    public var vcpus: Int
    public var workload: WorkloadSpec
    /// The parsed trace for a `trace:` workload (checked against the image's page count).
    public var trace: DirtyTrace?
    /// Workload seed: decides every page choice and written value.
    public var seed: UInt64
    public var pageSize: Int

    public init(vcpus: Int, workload: WorkloadSpec, trace: DirtyTrace? = nil, seed: UInt64, pageSize: Int = 4096) {
        self.vcpus = vcpus
        self.workload = workload
        self.trace = trace
        self.seed = seed
        self.pageSize = pageSize
    }

    /// A configuration from the workload text as given to `--workload` (and carried in
    /// `GUEST_CONFIG`). For a `trace:` workload the trace is checked from `traceText` (the file's
    /// contents, as they came with a migrated guest), or streamed from the spec's path when
    /// `traceText` is nil (any length; the guest replays it from the file).
    public static func make(
        vcpus: Int, workload: String, traceText: String? = nil, seed: UInt64, pageSize: Int,
        pageCount: Int
    ) throws(GuestError) -> GuestConfiguration {
        let spec = try WorkloadSpec.parse(workload)
        var trace: DirtyTrace?
        if case .trace(let path) = spec {
            if let traceText {
                trace = try DirtyTrace.parse(traceText, pageCount: pageCount)
            } else {
                trace = try DirtyTrace.load(path: path, pageCount: pageCount)
            }
        }
        return GuestConfiguration(vcpus: vcpus, workload: spec, trace: trace, seed: seed, pageSize: pageSize)
    }
}
