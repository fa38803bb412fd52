import Foundation

/// One pre-copy round as the report shows it.
public struct RoundRecord: Codable, Sendable, Equatable {
    public var round: Int
    public var pages: Int
    public var wireBytes: UInt64
    public var durationMs: Double
    /// Wire bytes per second of sending in this round (MB/s, 10^6 bytes): `wireBytes / sendingMs`
    /// on the source (`SendRate`), as the progress shows it; `wireBytes / durationMs` on the
    /// destination.
    public var sendRateMBps: Double
    /// Pages harvested dirty at the end of the round.
    public var dirtyPages: Int
    public var dirtyRateMBps: Double
    public var predictedDowntimeMs: Double
    public var throttlePercent: Int
    public var decision: String
    /// Source: the time the round's pages took to write (a `--max-bandwidth` wait included),
    /// not the harvest or the wait for its acknowledgement (`durationMs` includes those).
    /// Destination: the same as `durationMs`.
    public var sendingMs: Double = 0

    enum CodingKeys: String, CodingKey {
        case round, pages, decision
        case wireBytes = "wire_bytes"
        case durationMs = "duration_ms"
        case sendRateMBps = "send_mb_per_s"
        case dirtyPages = "dirty_pages"
        case dirtyRateMBps = "dirty_mb_per_s"
        case predictedDowntimeMs = "predicted_downtime_ms"
        case throttlePercent = "throttle_percent"
        case sendingMs = "sending_ms"
    }
}

/// One resume after the connections were lost during pre-copy.
public struct ResumeRecord: Codable, Sendable, Equatable {
    /// The round that was cut off.
    public var round: Int
    /// Connection attempts the source made (source only).
    public var attempts: Int = 0
    /// From noticing the loss to the streams being back.
    public var outageMs: Double
    /// Pages the destination held intact (`RESUME_STATE`).
    public var pagesHeld: Int
    /// Of those, pages whose copy came in the round that was cut off.
    public var pagesHeldFromRound: Int
    /// Source: pages dirtied since the last harvest before the round was lost, the outage
    /// included (sent again whether held or not).
    public var pagesDirtied: Int = 0
    /// Source: pages sent in the first round after the resume (not held, or dirtied since).
    public var pagesResent: Int = 0
    /// Source: wire bytes of that round.
    public var wireBytesResent: UInt64 = 0

    public init(
        round: Int, attempts: Int = 0, outageMs: Double, pagesHeld: Int, pagesHeldFromRound: Int,
        pagesDirtied: Int = 0, pagesResent: Int = 0, wireBytesResent: UInt64 = 0
    ) {
        self.pagesDirtied = pagesDirtied
        self.round = round
        self.attempts = attempts
        self.outageMs = outageMs
        self.pagesHeld = pagesHeld
        self.pagesHeldFromRound = pagesHeldFromRound
        self.pagesResent = pagesResent
        self.wireBytesResent = wireBytesResent
    }

    enum CodingKeys: String, CodingKey {
        case round, attempts
        case outageMs = "outage_ms"
        case pagesHeld = "pages_held"
        case pagesHeldFromRound = "pages_held_from_round"
        case pagesDirtied = "pages_dirtied"
        case pagesResent = "pages_resent"
        case wireBytesResent = "wire_bytes_resent"
    }
}

/// Pages sent or received, by wire encoding.
public struct EncodingCounts: Codable, Sendable, Equatable {
    public var zero: Int = 0
    public var lz4: Int = 0
    public var raw: Int = 0
    /// Mostly-zero pages sent as their non-zero words.
    public var words: Int = 0
    public var total: Int { zero + lz4 + raw + words }

    public init() {}

    mutating func add(_ other: EncodingCounts) {
        zero += other.zero
        lz4 += other.lz4
        raw += other.raw
        words += other.words
    }
}

/// The blackout broken into its parts (milliseconds).
public struct DowntimeParts: Codable, Sendable, Equatable {
    /// Source: stopping the vCPUs at a safe point.
    public var pauseVcpusMs: Double = 0
    /// Source: the last harvest of dirty pages.
    public var finalHarvestMs: Double = 0
    /// Source: encoding and writing the last pages, the device state and COMPLETE.
    public var finalSendMs: Double = 0
    /// Source, part of `finalSendMs`: reading the guest's device state (vCPUs included) and writing `DEVICE_STATE`.
    public var cpuStateMs: Double = 0
    /// Destination, part of its final phase: loading the received vCPU state into the guest's
    /// vCPUs (a KVM guest: restored into the VM built before the blackout; before `VERIFIED`).
    public var restoreVcpusMs: Double = 0
    /// Source: COMPLETE written → VERIFIED read (the destination's share is `destinationVerifyMs`).
    public var verifyMs: Double = 0
    /// Source: COMMIT written → RESUMED read (the destination's share is `destinationResumeMs`).
    public var commitResumeMs: Double = 0
    /// Destination's own time for the digest check, as it reported in VERIFIED.
    public var destinationVerifyMs: Double = 0
    /// Destination's own time from COMMIT to running vCPUs, as it reported in RESUMED.
    public var destinationResumeMs: Double = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case pauseVcpusMs = "pause_vcpus_ms"
        case finalHarvestMs = "final_harvest_ms"
        case finalSendMs = "final_send_ms"
        case cpuStateMs = "cpu_state_ms"
        case restoreVcpusMs = "restore_vcpus_ms"
        case verifyMs = "verify_ms"
        case commitResumeMs = "commit_resume_ms"
        case destinationVerifyMs = "destination_verify_ms"
        case destinationResumeMs = "destination_resume_ms"
    }
}

/// What one side of a migration did, for people (text) and tools (JSON). The JSON keys are the
/// `CodingKeys` below, the same for `json()` and a plain `JSONEncoder`; docs/json-report.md lists them.
public struct MigrationReport: Codable, Sendable {
    /// The version of this form (`currentSchemaVersion` when it was written).
    public var schemaVersion = MigrationReport.currentSchemaVersion
    public var role: String
    public var outcome: MigrationOutcome
    /// When the report was begun (the migration started) and when it ended, successfully or not.
    public var startedAt: ReportTimestamp? = ReportTimestamp()
    public var finishedAt: ReportTimestamp?
    /// Where the guest is now (JSON `guest`).
    public var guestLocation: GuestLocation
    public var image: String
    public var imageBytes: UInt64
    public var pageSize: Int
    public var pagesTotal: Int
    public var vcpus: Int
    public var workload: String
    public var tracker: String?
    public var trackerReason: String?
    public var compression: String?

    public var totalMs: Double = 0
    /// Connect, handshake, image preparation and tracker start, before round 0 sends a page.
    public var setupMs: Double = 0
    /// Destination: time `--prealloc` spent faulting in the image before the migration started
    /// (not part of `total_ms`, as QEMU's `prealloc=on` is not part of its total time).
    public var preallocMs: Double = 0
    /// CPU time (user + system, all threads of the agent's process) from the start of the
    /// migration to its end (source: RESUMED read; destination: guest resumed). On the source it
    /// includes the guest's vCPU threads.
    public var cpuMs: Double = 0
    public var downtimeMs: Double = 0
    public var downtimeClock: String = ""
    public var downtimeParts = DowntimeParts()
    public var predictedDowntimeMs: Double = 0
    /// Source, a pre-copy switch-over: `predictedDowntimeMs` part by part (`BlackoutForecast`).
    public var downtimeForecast: BlackoutForecast?
    /// Source, with a forecast: the parts of the blackout that took more than 1.5 times their
    /// forecast and 1 ms over it, each with its cause where the measurements tell (empty: none).
    public var downtimeMisses: [DowntimeMiss]?
    public var downtimeTargetMs: Double = 0

    public var rounds: Int = 0
    public var perRound: [RoundRecord] = []
    public var verified: Bool = false
    public var digest: String = ""
    public var wireBytes: UInt64 = 0
    public var pages = EncodingCounts()
    /// Source: zero pages sent without being read (holes of the image file, round 0).
    public var holePages = 0
    public var maxThrottlePercent: Int = 0
    /// Times the migration resumed after losing its connections during pre-copy.
    public var resumes = 0
    public var resumeRecords: [ResumeRecord] = []
    /// Steps each vCPU had completed when the guest left this side (source) or stopped (destination).
    public var vcpuSteps: [UInt64] = []
    public var runForMs: Double = 0
    public var announce: String = ""
    /// `ACCEPT.session_id`, hex: what `ferry status --session` asks about.
    public var session: String?
    /// Source: `ACCEPT.session_token`, 32 hex digits: what `ferry status --commit`/`--discard`
    /// (and a status query that is to name session ids) must present. A secret: whoever holds it
    /// can decide this migration's handoff.
    public var sessionToken: String?
    /// Source: connections it took to get the destination's answer to `HELLO`, when more than
    /// one (the destination closed earlier ones unanswered, e.g. under a flood of strangers).
    public var handshakeAttempts: Int?
    /// How the handoff was settled when the first acknowledgement was lost (source).
    public var handoff: String?
    /// Why the migration failed (or, on a destination, why the guest failed after it resumed there).
    public var error: ReportedError?
    /// How the post-copy went, when the migration switched to it (Protocol.md section 11).
    public var postcopy: PostcopyReport?
    /// How fast the guest got on before, during and after (guests that count their steps).
    public var progress: GuestProgressReport?
    /// The peer proved it holds the shared key (`--key-file`) on every connection.
    public var authenticated = false
    /// The cipher protecting the connections ("aes-256-gcm", "chacha20-poly1305"), or "none".
    public var encryption = "none"

    enum CodingKeys: String, CodingKey {
        case role, outcome, image, workload, tracker, compression, rounds, verified, digest, pages, resumes
        case announce, session, handoff, error, authenticated, encryption, vcpus, postcopy, progress
        case schemaVersion = "schema_version"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case guestLocation = "guest"
        case imageBytes = "image_bytes"
        case pageSize = "page_size_bytes"
        case pagesTotal = "pages_total"
        case trackerReason = "tracker_reason"
        case totalMs = "total_ms"
        case setupMs = "setup_ms"
        case preallocMs = "prealloc_ms"
        case cpuMs = "cpu_ms"
        case downtimeMs = "downtime_ms"
        case downtimeClock = "downtime_clock"
        case downtimeParts = "downtime_parts"
        case predictedDowntimeMs = "predicted_downtime_ms"
        case downtimeForecast = "downtime_forecast"
        case downtimeMisses = "downtime_misses"
        case downtimeTargetMs = "downtime_target_ms"
        case perRound = "per_round"
        case wireBytes = "wire_bytes"
        case holePages = "hole_pages"
        case maxThrottlePercent = "max_throttle_percent"
        case resumeRecords = "resume_records"
        case vcpuSteps = "vcpu_steps"
        case runForMs = "run_for_ms"
        case sessionToken = "session_token"
        case handshakeAttempts = "handshake_attempts"
    }

    public init(role: String, image: String, imageBytes: UInt64, pageSize: Int, vcpus: Int, workload: String) {
        self.role = role
        self.outcome = .running
        self.guestLocation = role == "source" ? .source : .notHere
        self.image = image
        self.imageBytes = imageBytes
        self.pageSize = pageSize
        self.pagesTotal = pageSize > 0 ? Int(imageBytes / UInt64(pageSize)) : 0
        self.vcpus = vcpus
        self.workload = workload
    }

    /// The report as JSON. A number that is not finite (none should be: a NaN or infinity would
    /// come from a bug or a degenerate measurement) is written as `null` rather than failing the
    /// whole report after a migration that succeeded.
    public func json() throws -> Data {
        try Self.json(self)
    }

    /// `value` (a report, or a document that holds reports) as pretty-printed JSON with sorted
    /// keys, a non-finite number written as `null`.
    public static func json(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let marker = "ferry:non-finite-number"
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: marker, negativeInfinity: marker, nan: marker)
        let data = try encoder.encode(value)
        let quoted = "\"\(marker)\""
        let text = String(decoding: data, as: UTF8.self)
        // The marker as a whole JSON string value (a string field that merely contains it is escaped differently).
        return text.contains(quoted) ? Data(text.replacingOccurrences(of: quoted, with: "null").utf8) : data
    }

    /// The source's forecast of the blackout, and every part that missed it.
    func forecastLines() -> [String] {
        guard let f = downtimeForecast else { return [] }
        func ms(_ value: Double) -> String { String(format: "%.1f ms", value) }
        var lines = [
            "    forecast   pause vCPUs \(ms(f.pauseVcpusMs)), final harvest \(ms(f.finalHarvestMs)), \(f.finalPages) pages \(ms(f.finalPagesMs)) (\(f.stalePages) dirtied after the last harvest), device state \(ms(f.deviceStateMs)) (\(f.deviceStateBytes) B), queued \(f.queuedBytes) B \(ms(f.queuedMs)), destination verify \(ms(f.destinationVerifyMs)), round trips \(ms(f.roundTripsMs))"
        ]
        for miss in downtimeMisses ?? [] {
            lines.append(
                "    missed     \(miss.part): \(ms(miss.actualMs)) against \(ms(miss.predictedMs)) forecast: \(miss.cause)"
            )
        }
        return lines
    }

    /// A report for people: a few aligned lines, then one line per round.
    public func text() -> String {
        func mb(_ bytes: UInt64) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
        func ms(_ value: Double) -> String { String(format: "%.2f ms", value) }
        var lines: [String] = []
        lines.append("\(role) report: \(outcome.phrase)")
        lines.append("  guest        \(vcpus) vCPU(s), workload \(workload), now on: \(guestLocation.rawValue)")
        if let session { lines.append("  session      \(session)") }
        if let sessionToken { lines.append("  token        \(sessionToken) (secret: ferry status --token)") }
        lines.append("  image        \(image) (\(mb(imageBytes)), \(pagesTotal) pages of \(pageSize) B)")
        if let tracker { lines.append("  tracker      \(tracker)\(trackerReason.map { " (\($0))" } ?? "")") }
        lines.append("  total        \(ms(totalMs)) (setup \(ms(setupMs))), process CPU \(ms(cpuMs))")
        if preallocMs > 0 {
            lines.append("  prealloc     image faulted in before the migration in \(ms(preallocMs)) (not in total)")
        }
        if downtimeMs > 0 {
            let p = downtimeParts
            if role == "source" {
                lines.append(
                    "  downtime     \(ms(downtimeMs)) (target \(ms(downtimeTargetMs)), predicted \(ms(predictedDowntimeMs)))"
                )
                lines.append(
                    "    parts      pause vCPUs \(ms(p.pauseVcpusMs)), final harvest \(ms(p.finalHarvestMs)), final send \(ms(p.finalSendMs)) (CPU state \(ms(p.cpuStateMs))), verify \(ms(p.verifyMs)) (destination \(ms(p.destinationVerifyMs))), commit+resume \(ms(p.commitResumeMs)) (destination \(ms(p.destinationResumeMs)))"
                )
                lines += forecastLines()
            } else {
                lines.append("  blackout     \(ms(downtimeMs)) seen here")
                lines.append(
                    "    parts      final pages \(ms(p.finalSendMs)) (restore vCPUs \(ms(p.restoreVcpusMs))), verify \(ms(p.destinationVerifyMs)), resume \(ms(p.destinationResumeMs))"
                )
            }
            lines.append("    clock      \(downtimeClock)")
        }
        lines.append(
            "  rounds       \(rounds), wire \(mb(wireBytes)), pages zero \(pages.zero)\(holePages > 0 ? " (\(holePages) file holes, not read)" : "") / words \(pages.words) / lz4 \(pages.lz4) / raw \(pages.raw)"
        )
        lines += postcopyLines()
        for record in resumeRecords {
            var line = "  resumed      after losing round \(record.round): outage \(ms(record.outageMs))"
            if record.attempts > 0 { line += " (\(record.attempts) attempt\(record.attempts == 1 ? "" : "s"))" }
            line += ", destination held \(record.pagesHeld) of \(pagesTotal) pages"
            if role == "source" {
                line +=
                    "; \(record.pagesDirtied) dirtied; resent \(record.pagesResent) pages, \(mb(record.wireBytesResent))"
            }
            lines.append(line)
        }
        if maxThrottlePercent > 0 {
            lines.append("  throttle     vCPUs slowed by up to \(maxThrottlePercent)% (auto-converge)")
        }
        if let progress { lines.append("  progress     \(progress.text)") }
        lines.append("  verified     \(verified ? "yes" : "no")\(digest.isEmpty ? "" : ", digest \(digest)")")
        if !vcpuSteps.isEmpty { lines.append("  vCPU steps   \(vcpuSteps.map(String.init).joined(separator: ","))") }
        if !announce.isEmpty { lines.append("  announce     \(announce)") }
        if let handoff { lines.append("  handoff      \(handoff)") }
        if authenticated {
            lines.append(
                "  security     peer authenticated, \(encryption == "none" ? "not encrypted" : "encrypted with \(encryption)")"
            )
        }
        if let error { lines.append("  error        \(error.message)") }
        if !perRound.isEmpty {
            lines.append(
                "  round      pages      wire MB   time ms  send MB/s  dirty pages  dirty MB/s  predicted ms  throttle  decision"
            )
            for r in perRound {
                lines.append(
                    String(
                        format: "  %5d %10d %12.1f %9.1f %10.0f %12d %11.0f %13.1f %8d%%  %@",
                        r.round, r.pages, Double(r.wireBytes) / 1e6, r.durationMs, r.sendRateMBps, r.dirtyPages,
                        r.dirtyRateMBps, r.predictedDowntimeMs, r.throttlePercent, r.decision))
            }
        }
        return lines.joined(separator: "\n")
    }
}

extension MigrationReport {
    /// The post-copy lines of the text report (none without post-copy).
    func postcopyLines() -> [String] {
        guard let postcopy else { return [] }
        func ms(_ value: Double) -> String { String(format: "%.2f ms", value) }
        var line =
            "  post-copy    after \(postcopy.afterRounds) rounds: \(postcopy.stalePages) pages followed the guest in \(ms(postcopy.durationMs)) (\(postcopy.requestedPages) asked for by the guest, \(postcopy.pushedPages) pushed\(postcopy.hotPages.map { ", \($0) hot ones first" } ?? ""))"
        if let p50 = postcopy.faultWaitP50Ms, let p99 = postcopy.faultWaitP99Ms {
            line += "; a touched page waited \(ms(p50)) (p50), \(ms(p99)) (p99)"
        }
        return [line] + (postcopy.reason.map { ["    why        \($0)"] } ?? [])
    }
}

/// The post-copy phase of a migration (docs/postcopy.md): from the switch (the guest runs on the
/// destination) to the last page verified there.
public struct PostcopyReport: Codable, Sendable, Equatable {
    /// Pre-copy rounds acknowledged before the switch.
    public var afterRounds = 0
    /// Pages the destination lacked at the switch (stale or never sent).
    public var stalePages = 0
    /// Of them, sent because the guest touched them (PAGE_REQUEST), and by the background push.
    public var requestedPages = 0
    public var pushedPages = 0
    /// Source: of the stale pages, those the push sent first (dirtied in each of the last two
    /// pre-copy intervals: the guest's working set, `PushOrder`).
    public var hotPages: Int?
    /// PAGE_REQUEST frames (source: read; destination: sent).
    public var requests = 0
    /// From the switch to the destination's VERIFIED of the last page.
    public var durationMs: Double = 0
    public var wireBytes: UInt64 = 0
    /// Destination: from reading a fault to installing its page (the wait of a vCPU that touched
    /// a missing page, without the kernel's share), over the faults answered by a request.
    public var faultWaitP50Ms: Double?
    public var faultWaitP99Ms: Double?
    public var faultWaitMaxMs: Double?
    /// Source: why the policy switched (`ConvergenceDecision.reason`), and what it predicted the
    /// guest would lose (`HybridCost`): with post-copy, and with pre-copy carried on (nil when
    /// pre-copy could not converge within its limits, or the switch was not weighed).
    public var reason: String?
    public var predictedCostMs: Double?
    public var predictedPrecopyCostMs: Double?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case afterRounds = "after_rounds"
        case stalePages = "stale_pages"
        case hotPages = "hot_pages"
        case requestedPages = "requested_pages"
        case pushedPages = "pushed_pages"
        case requests
        case durationMs = "duration_ms"
        case wireBytes = "wire_bytes"
        case faultWaitP50Ms = "fault_wait_p50_ms"
        case faultWaitP99Ms = "fault_wait_p99_ms"
        case faultWaitMaxMs = "fault_wait_max_ms"
        case reason
        case predictedCostMs = "predicted_cost_ms"
        case predictedPrecopyCostMs = "predicted_precopy_cost_ms"
    }
}
