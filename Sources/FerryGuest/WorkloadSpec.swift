/// What the guest's vCPUs do to memory.
///
/// Text forms (`description` gives them back, and `parse(description)` equals the spec):
/// `idle`, `uniform:200MB/s`, `hotset:200MB/s,10%,90%`, `sweep:100MB/s`, `trace:/path/file`.
public enum WorkloadSpec: Equatable, Sendable, CustomStringConvertible {
    /// No writes at all.
    case idle
    /// Pages chosen uniformly at random over the image.
    case uniform(Rate)
    /// `sharePercent` of the writes go to a hot set of `hotPercent` of the pages; the rest are uniform.
    case hotset(Rate, hotPercent: Double, sharePercent: Double)
    /// Each vCPU writes its own contiguous share of the image in order, wrapping around.
    case sweep(Rate)
    /// Replays a dirty-page trace file (see `DirtyTrace`).
    case trace(path: String)

    public var description: String {
        switch self {
        case .idle: "idle"
        case .uniform(let rate): "uniform:\(rate)"
        case .hotset(let rate, let hot, let share): "hotset:\(rate),\(formatNumber(hot))%,\(formatNumber(share))%"
        case .sweep(let rate): "sweep:\(rate)"
        case .trace(let path): "trace:\(path)"
        }
    }

    /// The rate of a rate-driven workload; nil for `idle` and `trace`.
    public var rate: Rate? {
        switch self {
        case .uniform(let rate), .hotset(let rate, _, _), .sweep(let rate): rate
        case .idle, .trace: nil
        }
    }

    static let forms =
        "idle, uniform:RATE, hotset:RATE,HOT%,SHARE%, sweep:RATE or trace:PATH (e.g. uniform:200MB/s, hotset:200MB/s,10%,90%)"

    public static func parse(_ s: String) throws(GuestError) -> WorkloadSpec {
        let text = String(s.trimmingSpaces)
        if text == "idle" { return .idle }
        guard let colon = text.firstIndex(of: ":") else {
            throw GuestError(.invalidWorkload, "workload '\(s)': expected \(forms)")
        }
        let kind = text[..<colon]
        let argument = String(text[text.index(after: colon)...])
        switch kind {
        case "uniform": return .uniform(try rate(argument, in: s))
        case "sweep": return .sweep(try rate(argument, in: s))
        case "trace":
            guard !argument.isEmpty else {
                throw GuestError(.invalidWorkload, "workload '\(s)': missing the trace file path; expected trace:PATH")
            }
            return .trace(path: argument)
        case "hotset":
            let parts = argument.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 else {
                throw GuestError(
                    .invalidWorkload,
                    "workload '\(s)': expected hotset:RATE,HOT%,SHARE% (e.g. hotset:200MB/s,10%,90%: 90% of the writes go to 10% of the pages)"
                )
            }
            let hot = try percent(parts[1], what: "hot-set size", in: s)
            guard hot > 0 else {
                throw GuestError(.invalidWorkload, "workload '\(s)': the hot-set size must be above 0%")
            }
            return .hotset(
                try rate(parts[0], in: s), hotPercent: hot,
                sharePercent: try percent(parts[2], what: "hot-set share", in: s))
        default:
            throw GuestError(.invalidWorkload, "workload '\(s)': unknown kind '\(kind)'; expected \(forms)")
        }
    }

    private static func rate(_ text: String, in spec: String) throws(GuestError) -> Rate {
        do {
            return try Rate.parse(text)
        } catch {
            throw GuestError(.invalidWorkload, "workload '\(spec)': \(error.message)")
        }
    }

    private static func percent(_ text: String, what: String, in spec: String) throws(GuestError) -> Double {
        var t = String(text.trimmingSpaces)
        if t.hasSuffix("%") { t.removeLast() }
        guard let value = Double(t), value.isFinite, value >= 0, value <= 100 else {
            throw GuestError(
                .invalidWorkload, "workload '\(spec)': \(what) '\(text)' is not a percentage from 0% to 100%")
        }
        return value
    }
}
