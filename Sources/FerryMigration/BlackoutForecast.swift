/// The blackout predicted part by part, as if the guest were paused after a pre-copy round, and
/// held against the parts measured once it happened (`DowntimeParts`). Pure: figures in, figures
/// out.
///
/// Every part of the blackout has its prediction: pausing the vCPUs and the final harvest (as
/// measured), the final round's pages (the dirty ones and those the guest is expected to dirty
/// until it pauses), the device state (read and sent), whatever still waits in the sockets' send
/// queues, the destination's digest, and the two round trips (COMPLETE → VERIFIED and
/// COMMIT → RESUMED).
public struct BlackoutForecast: Codable, Sendable, Equatable {
    /// The measured inputs that do not depend on the link's rate.
    public struct Costs: Sendable, Equatable {
        /// Pausing the vCPUs (measured at setup).
        public var pauseSeconds: Double
        /// The last round's harvest of dirty pages.
        public var harvestSeconds: Double
        /// Reading the device state, and its size (measured at setup, the vCPUs paused).
        public var deviceStateReadSeconds: Double
        public var deviceStateBytes: Int
        /// Bytes written to the connections that their peer has not acknowledged (`SIOCOUTQ`).
        public var queuedBytes: Int
        /// The destination's digest of the image (from the last `ROUND_ACK`).
        public var destinationVerifySeconds: Double
        /// The smallest round trip measured (ROUND_END → ROUND_ACK, less the destination's work).
        public var roundTripSeconds: Double

        public init(
            pauseSeconds: Double = 0, harvestSeconds: Double = 0, deviceStateReadSeconds: Double = 0,
            deviceStateBytes: Int = 0, queuedBytes: Int = 0, destinationVerifySeconds: Double = 0,
            roundTripSeconds: Double = 0
        ) {
            self.pauseSeconds = pauseSeconds
            self.harvestSeconds = harvestSeconds
            self.deviceStateReadSeconds = deviceStateReadSeconds
            self.deviceStateBytes = deviceStateBytes
            self.queuedBytes = queuedBytes
            self.destinationVerifySeconds = destinationVerifySeconds
            self.roundTripSeconds = roundTripSeconds
        }

        /// The parts that take the same time whatever the link's rate.
        public var fixedSeconds: Double {
            pauseSeconds + harvestSeconds + deviceStateReadSeconds + destinationVerifySeconds + 2 * roundTripSeconds
        }
    }

    public var pauseVcpusMs: Double
    public var finalHarvestMs: Double
    /// Pages the final round would send: the dirty ones, and `stalePages` more the guest is
    /// expected to dirty between the last harvest and the pause.
    public var finalPages: Int
    public var stalePages: Int
    public var finalPagesMs: Double
    public var deviceStateBytes: Int
    /// Reading the device state and sending it.
    public var deviceStateMs: Double
    public var queuedBytes: Int
    public var queuedMs: Double
    public var destinationVerifyMs: Double
    public var roundTripsMs: Double
    public var totalMs: Double

    /// The forecast for `dirtyPages` + `stalePages` final pages over a link that moves
    /// `pagesPerSecond` pages with data and `bytesPerSecond` bytes: infinite when the final
    /// round has pages and the rate is unknown.
    public init(costs: Costs, dirtyPages: Int, stalePages: Int, pagesPerSecond: Double, bytesPerSecond: Double) {
        func seconds(_ amount: Int, at rate: Double) -> Double {
            amount == 0 ? 0 : rate > 0 && rate.isFinite ? Double(amount) / rate : .infinity
        }
        pauseVcpusMs = costs.pauseSeconds * 1000
        finalHarvestMs = costs.harvestSeconds * 1000
        finalPages = dirtyPages + stalePages
        self.stalePages = stalePages
        finalPagesMs = seconds(finalPages, at: pagesPerSecond) * 1000
        deviceStateBytes = costs.deviceStateBytes
        deviceStateMs = (costs.deviceStateReadSeconds + seconds(costs.deviceStateBytes, at: bytesPerSecond)) * 1000
        queuedBytes = costs.queuedBytes
        queuedMs = seconds(costs.queuedBytes, at: bytesPerSecond) * 1000
        destinationVerifyMs = costs.destinationVerifySeconds * 1000
        roundTripsMs = 2 * costs.roundTripSeconds * 1000
        totalMs =
            pauseVcpusMs + finalHarvestMs + finalPagesMs + deviceStateMs + queuedMs + destinationVerifyMs
            + roundTripsMs
    }

    public var totalSeconds: Double { totalMs / 1000 }

    enum CodingKeys: String, CodingKey {
        case pauseVcpusMs = "pause_vcpus_ms"
        case finalHarvestMs = "final_harvest_ms"
        case finalPages = "final_pages"
        case stalePages = "stale_pages"
        case finalPagesMs = "final_pages_ms"
        case deviceStateBytes = "device_state_bytes"
        case deviceStateMs = "device_state_ms"
        case queuedBytes = "queued_bytes"
        case queuedMs = "queued_ms"
        case destinationVerifyMs = "destination_verify_ms"
        case roundTripsMs = "round_trips_ms"
        case totalMs = "total_ms"
    }
}

/// A part of the blackout that took markedly longer than forecast (more than 1.5 times its
/// prediction and 1 ms over it), with what made it longer where the measurements tell.
public struct DowntimeMiss: Codable, Sendable, Equatable {
    public var part: String
    public var predictedMs: Double
    public var actualMs: Double
    public var cause: String

    public init(part: String, predictedMs: Double, actualMs: Double, cause: String) {
        self.part = part
        self.predictedMs = predictedMs
        self.actualMs = actualMs
        self.cause = cause
    }

    enum CodingKeys: String, CodingKey {
        case part
        case predictedMs = "predicted_ms"
        case actualMs = "actual_ms"
        case cause
    }

    /// A part misses when it took more than this many times its prediction…
    public static let ratio = 1.5
    /// …and this many milliseconds more (scheduling noise on parts of a fraction of a millisecond).
    public static let slackMs = 1.0

    static func missed(predicted: Double, actual: Double) -> Bool {
        actual > ratio * predicted && actual > predicted + slackMs
    }
}

extension BlackoutForecast {
    /// The parts of the measured blackout (`downtimeMs` in all) that missed this forecast, the
    /// whole first. `finalPages`: the pages the final round sent. The source's parts are compared
    /// in groups whose clocks are clean: pausing, the final harvest, sending (the final pages, the
    /// device state and what was queued, until VERIFIED less the destination's digest), the
    /// destination's digest, the round trip of the handoff (COMMIT → RESUMED less the
    /// destination's share), and the destination's resume, which is not forecast (0).
    public func misses(_ actual: DowntimeParts, downtimeMs: Double, finalPages sent: Int) -> [DowntimeMiss] {
        let sending = actual.finalSendMs + max(0, actual.verifyMs - actual.destinationVerifyMs)
        let groups: [(part: String, predicted: Double, actual: Double)] = [
            ("pause_vcpus", pauseVcpusMs, actual.pauseVcpusMs),
            ("final_harvest", finalHarvestMs, actual.finalHarvestMs),
            ("sending", finalPagesMs + deviceStateMs + queuedMs + roundTripsMs / 2, sending),
            ("destination_verify", destinationVerifyMs, actual.destinationVerifyMs),
            ("commit_resume", roundTripsMs / 2, max(0, actual.commitResumeMs - actual.destinationResumeMs)),
            ("destination_resume", 0, actual.destinationResumeMs),
        ]
        var misses = groups.filter { DowntimeMiss.missed(predicted: $0.predicted, actual: $0.actual) }.map {
            DowntimeMiss(
                part: $0.part, predictedMs: $0.predicted, actualMs: $0.actual,
                cause: cause(of: $0.part, actual, finalPages: sent))
        }
        if DowntimeMiss.missed(predicted: totalMs, actual: downtimeMs) {
            let why =
                misses.isEmpty
                ? "no single part missed its forecast by the margin; several took a little longer"
                : "the parts that missed follow: " + misses.map(\.part).joined(separator: ", ")
            misses.insert(DowntimeMiss(part: "total", predictedMs: totalMs, actualMs: downtimeMs, cause: why), at: 0)
        }
        return misses
    }

    /// What made `part` take longer, as far as the measurements tell.
    private func cause(of part: String, _ actual: DowntimeParts, finalPages sent: Int) -> String {
        switch part {
        case "pause_vcpus":
            return
                "pausing the vCPUs took longer than the pause measured at setup (a vCPU slow to reach a safe point, or the host's CPUs busy)"
        case "final_harvest":
            return "the final harvest took longer than the last round's (more pages dirtied, or the host's CPUs busy)"
        case "sending":
            return sendingCause(actual, finalPages: sent)
        case "destination_verify":
            return
                "the destination's time from COMPLETE to VERIFIED exceeded the digest it timed for the last round: it includes waiting for the final round's batches on the other page streams, which on a slow link arrive after COMPLETE (VERIFIED does not tell the two apart)"
        case "commit_resume":
            return "the round trip took longer than the smallest one measured during pre-copy (a busy link or host)"
        default:
            return
                "the destination's resume (publishing the image, starting the vCPUs) is not forecast: the source learns its cost only from RESUMED"
        }
    }

    private func sendingCause(_ actual: DowntimeParts, finalPages sent: Int) -> String {
        if Double(sent) > DowntimeMiss.ratio * Double(finalPages) && sent > finalPages + 16 {
            return
                "the final round sent \(sent) pages where \(finalPages) were forecast (\(stalePages) of them for writes after the last harvest): the guest dirtied more between the last harvest and the pause than its recent rounds' rate said"
        }
        if actual.cpuStateMs > DowntimeMiss.ratio * deviceStateMs + DowntimeMiss.slackMs {
            return
                "taking and sending the device state took \(Self.ms(actual.cpuStateMs)) where \(Self.ms(deviceStateMs)) was forecast (a disk flushed at the pause, or device sections larger than at setup)"
        }
        return
            "\(sent) pages took longer on the link than the slowest recent round's rate said (the link or the destination slowed down)"
    }

    static func ms(_ value: Double) -> String { String(format: "%.1f ms", value) }
}
