import FerryMigration
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Logging

/// What a `migrate` request asks for: the destination and the usual `ferry send` options.
struct MigrationRequest: Sendable {
    var destination: Endpoint
    var keyFile: String?
    var encrypt = false
    var settings = ConvergenceSettings()
    var maxBandwidthBytesPerSecond: Double?
    var streams = SourceOptions.defaultStreams
    var compression = CompressionChoice.auto
    var handoffTimeout: Duration?

    init(_ request: ControlRequest) throws(ControlFailure) {
        guard let to = try request.string("to") else {
            throw ControlFailure(
                .badRequest, field: "to", "missing: the destination's HOST:PORT (its ferry vmm --incoming)")
        }
        do { destination = try Endpoint.parse(to) } catch {
            throw ControlFailure(.badRequest, field: "to", error.message)
        }
        keyFile = try request.string("key_file")
        encrypt = try request.bool("encrypt") ?? false
        if encrypt && keyFile == nil {
            throw ControlFailure(.badRequest, field: "encrypt", "encryption needs key_file")
        }
        if let value = try request.number("downtime_ms", in: 0...3_600_000) {
            settings.downtimeTarget = .milliseconds(value)
        }
        if let value = try request.number("max_rounds", in: 1...10_000, integer: true) {
            settings.maxRounds = Int(value)
        }
        if let value = try request.number("timeout_s", in: 0.001...2_592_000) { settings.timeout = .seconds(value) }
        if let value = try request.number("handoff_timeout_s", in: 0.1...2_592_000) {
            handoffTimeout = .milliseconds(Int64(value * 1000))
        }
        settings.forceSwitchover = try request.bool("force_switchover") ?? false
        settings.autoConverge = try request.bool("auto_converge") ?? true
        maxBandwidthBytesPerSecond = try request.number("max_bandwidth_bytes_per_s", in: 1...1e12)
        if let value = try request.number("streams", in: 1...16, integer: true) { streams = Int(value) }
        if let text = try request.string("compression") {
            guard let choice = CompressionChoice(rawValue: text) else {
                throw ControlFailure(.badRequest, field: "compression", "auto, lz4 or none, got \"\(text)\"")
            }
            compression = choice
        }
    }

    func security() throws(ControlFailure) -> ConnectionSecurity {
        guard let keyFile else { return .none }
        do { return ConnectionSecurity(key: try SharedKey.load(path: keyFile), encrypt: encrypt) } catch {
            throw ControlFailure(.badRequest, field: "key_file", error.message)
        }
    }
}

/// One outgoing live migration of this process's guest, run by the engine's `SourceAgent` on its
/// own thread; the control socket reads its figures and can cancel it.
final class OutgoingMigration: @unchecked Sendable {
    enum Phase: String {
        case starting, precopy, reconnecting, completed, failed, cancelled
    }

    let destination: Endpoint
    /// The guest was paused when the migration began: it stays paused throughout (the engine's
    /// pause and resume do not touch it), and here again if the migration fails.
    let paused: Bool
    let cancellation = MigrationCancellation()
    private let condition = MonotonicCondition()
    private var phase = Phase.starting
    private var progress: MigrationProgress?
    private var error: String?
    private var report: MigrationReport?
    private let guest: RunningGuest

    /// What the engine migrates (see `EngineGuest`).
    let engineGuest: EngineGuest

    init(destination: Endpoint, guest: RunningGuest, paused: Bool) {
        self.destination = destination
        self.guest = guest
        self.paused = paused
        engineGuest = EngineGuest(guest, held: paused)
    }

    /// Runs the migration (blocking); `events` gets each progress value as a JSON event.
    func run(
        options: SourceOptions, imagePath: String?, logger: Logger, events: @escaping @Sendable (JSONValue) -> Void
    ) -> Result<MigrationReport, MigrationError> {
        var options = options
        options.cancellation = cancellation
        let agent = SourceAgent(
            guest: engineGuest, imagePath: imagePath, options: options, logger: logger
        ) { [weak self] progress in
            guard let self else { return }
            self.record(progress)
            events(self.status())
        }
        do {
            let report = try agent.migrate()
            finish(.completed, report: report, error: nil)
            return .success(report)
        } catch {
            let failure =
                (error as? MigrationError) ?? MigrationError(.system, "migrating: \(error)", guest: .source)
            let phase: Phase = failure.code == .cancelled ? .cancelled : .failed
            finish(phase, report: agent.lastReport, error: failure.message)
            return .failure(failure)
        }
    }

    private func record(_ value: MigrationProgress) {
        condition.withLock {
            progress = value
            if case .reconnecting = value.kind { phase = .reconnecting } else { phase = .precopy }
        }
    }

    private func finish(_ phase: Phase, report: MigrationReport?, error: String?) {
        condition.withLock {
            self.phase = phase
            self.report = report
            self.error = error
        }
    }

    /// One round of the report as `migration` answers it (the Migration resource's `per_round`).
    static func roundFields(_ record: RoundRecord) -> JSONValue {
        [
            "round": JSONValue(record.round), "pages": JSONValue(record.pages),
            "wire_bytes": JSONValue(record.wireBytes), "duration_ms": JSONValue(record.durationMs),
            "sending_ms": JSONValue(record.sendingMs), "dirty_pages": JSONValue(record.dirtyPages),
            "throttle_percent": JSONValue(record.throttlePercent), "decision": .string(record.decision),
        ]
    }

    /// The progress value's kind as events name it.
    static func kindName(_ kind: MigrationProgress.Kind) -> String {
        switch kind {
        case .live: "live"
        case .roundEnded: "round-ended"
        case .reconnecting: "reconnecting"
        case .resumed: "resumed"
        }
    }

    var isActive: Bool { condition.withLock { phase == .starting || phase == .precopy || phase == .reconnecting } }
    var hasCompleted: Bool { condition.withLock { phase == .completed } }

    /// `migration`'s answer, and the body of each progress event.
    func status() -> JSONValue {
        condition.withLock {
            var fields: [String: JSONValue] = [
                "phase": .string(phase.rawValue), "destination": .string("\(destination)"),
                "throttle_percent": JSONValue(guest.migratable.throttlePercent), "error": JSONValue(error),
            ]
            if let progress {
                let pending = max(0, (progress.pagesInRound ?? progress.pagesSent) - progress.pagesSent)
                fields["round"] = JSONValue(progress.round)
                fields["bytes_sent"] = JSONValue(progress.wireBytes)
                fields["round_bytes_sent"] = JSONValue(progress.roundWireBytes)
                fields["bytes_remaining"] = JSONValue(pending * progress.pageSize)
                fields["pages_total"] = JSONValue(progress.pageCount)
                fields["dirty_pages_per_s"] = JSONValue(progress.dirtyPagesPerSecond)
                fields["dirty_bytes_per_s"] = JSONValue(progress.dirtyPagesPerSecond * Double(progress.pageSize))
                fields["progress"] = .string(Self.kindName(progress.kind))
                fields["send_bytes_per_s"] = JSONValue(progress.sendBytesPerSecond)
                fields["expected_downtime_ms"] = JSONValue(progress.predictedDowntimeSeconds.map { $0 * 1000 })
                fields["eta_s"] = JSONValue(progress.migrationETASeconds)
                fields["elapsed_s"] = JSONValue(progress.elapsedSeconds)
            }
            if let report {
                fields["rounds"] = JSONValue(report.rounds)
                fields["downtime_ms"] = JSONValue(report.downtimeMs)
                fields["total_ms"] = JSONValue(report.totalMs)
                fields["setup_ms"] = JSONValue(report.setupMs)
                fields["bytes_sent"] = JSONValue(report.wireBytes)
                fields["guest_location"] = .string(report.guestLocation.rawValue)
                fields["cpu_ms"] = JSONValue(report.cpuMs)
                fields["per_round"] = .array(report.perRound.map(Self.roundFields))
            }
            return .object(fields)
        }
    }
}

/// The guest as the engine migrates it. Two differences from the guest itself:
/// - `held` (the guest was paused before the migration): it is already parked, so the engine's
///   `pause()` costs nothing and its `resume()` (after measuring a pause, after a failed
///   blackout) leaves it parked;
/// - the engine's `stopForHandover()` while the guest is parked (after COMMIT) is deferred: the
///   vCPUs stay parked, and the vmm ends them once the destination's answer is known (`left`),
///   so that an unresolved handoff can still be resolved in favour of the source (`resolve`).
///   A `stopForHandover()` of a guest that is not parked (a split brain the engine stops at
///   once) is done at once.
final class EngineGuest: ForwardingMigratableGuest, @unchecked Sendable {
    let guest: RunningGuest
    let held: Bool
    private let condition = MonotonicCondition()
    private var parked = false
    private var deferredStop = false

    init(_ guest: RunningGuest, held: Bool) {
        self.guest = guest
        self.held = held
    }

    var forwardee: any MigratableGuest { guest.migratable }
    func pause() -> UInt64 {
        condition.withLock { parked = true }
        return held ? 0 : forwardee.pause()
    }
    func resume() {
        condition.withLock { parked = false }
        if !held { forwardee.resume() }
    }
    func stopForHandover() -> [UInt64] {
        let deferred = condition.withLock { () -> Bool in
            guard parked || held else { return false }
            deferredStop = true
            return true
        }
        return deferred ? guest.stepsPerVCPU : forwardee.stopForHandover()
    }

    /// Ends the vCPUs if the engine's stop was deferred (once).
    func completeDeferredStop() {
        let due = condition.withLock { () -> Bool in
            defer { deferredStop = false }
            return deferredStop
        }
        if due { _ = forwardee.stopForHandover() }
    }
}
