import ArgumentParser
import FerryControl

/// `ferry agent`'s limits for judging the health directory's signals (`HealthThresholds`;
/// docs/agent.md, "Health directory"). The defaults are `HealthThresholds()`'s.
struct HealthOptions: ParsableArguments {
    @Option(
        name: .customLong("health-ce-failing"),
        help: ArgumentHelp(
            "Corrected memory errors one memory controller may count before the host is failing (and its guests"
                + " evacuated within --health-deadline).", valueName: "count"))
    var correctedErrorLimit: Int64 = HealthThresholds().correctedErrorLimit

    @Option(
        name: .customLong("health-ce-warning"),
        help: ArgumentHelp(
            "Corrected memory errors at which the host warns whatever their rate (default: only a rate that reaches"
                + " --health-ce-failing later than --health-ce-horizon warns).", valueName: "count"))
    var correctedErrorWarning: Int64?

    @Option(
        name: .customLong("health-ce-horizon"),
        help: ArgumentHelp(
            "Corrected errors whose rate reaches --health-ce-failing within this many seconds make the host failing,"
                + " with that time as its deadline; later, a warning.", valueName: "seconds"))
    var correctedErrorHorizonSeconds: Double = HealthThresholds().correctedErrorHorizonSeconds

    @Option(
        name: .customLong("health-smart-failing-raw"),
        help: ArgumentHelp(
            "The raw count at which a watched SMART attribute (reallocated, pending or uncorrectable sectors) makes"
                + " the host failing (default: any count above zero is a warning, never failing).", valueName: "count"))
    var smartRawFailing: Int64?

    @Option(
        name: .customLong("health-deadline"),
        help: ArgumentHelp(
            "Seconds the host has to be emptied after an uncorrected memory error, a SMART attribute at its"
                + " threshold or a corrected count at --health-ce-failing.", valueName: "seconds"))
    var shortDeadlineSeconds: Double = HealthThresholds().shortDeadlineSeconds

    @Option(
        name: .customLong("health-critical-deadline"),
        help: ArgumentHelp(
            "Seconds the host has to be emptied after a critical IPMI event.", valueName: "seconds"))
    var criticalEventDeadlineSeconds: Double = HealthThresholds().criticalEventDeadlineSeconds

    @Option(
        name: .customLong("health-event-max-age"),
        help: ArgumentHelp("IPMI events older than this many seconds say nothing of now.", valueName: "seconds"))
    var eventMaxAgeSeconds: Int64 = HealthThresholds().eventMaxAgeSeconds

    func validate() throws {
        guard correctedErrorLimit >= 1 else { throw ValidationError("--health-ce-failing: at least 1") }
        if let correctedErrorWarning, !(1..<correctedErrorLimit).contains(correctedErrorWarning) {
            throw ValidationError(
                "--health-ce-warning \(correctedErrorWarning): at least 1, below --health-ce-failing \(correctedErrorLimit)"
            )
        }
        if let smartRawFailing, smartRawFailing < 1 { throw ValidationError("--health-smart-failing-raw: at least 1") }
        for (name, value) in [
            ("--health-ce-horizon", correctedErrorHorizonSeconds), ("--health-deadline", shortDeadlineSeconds),
            ("--health-critical-deadline", criticalEventDeadlineSeconds),
            ("--health-event-max-age", Double(eventMaxAgeSeconds)),
        ] where !(value > 0 && value <= 365 * 86_400) {
            throw ValidationError("\(name) \(value): above 0, at most a year of seconds")
        }
    }

    var thresholds: HealthThresholds {
        HealthThresholds(
            correctedErrorLimit: correctedErrorLimit, correctedErrorHorizonSeconds: correctedErrorHorizonSeconds,
            shortDeadlineSeconds: shortDeadlineSeconds, criticalEventDeadlineSeconds: criticalEventDeadlineSeconds,
            eventMaxAgeSeconds: eventMaxAgeSeconds, correctedErrorWarning: correctedErrorWarning,
            smartRawFailing: smartRawFailing)
    }
}
