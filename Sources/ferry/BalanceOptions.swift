import ArgumentParser
import FerryController

/// `ferry control --balance-…`: the periodic load-balancing pass (docs/control-plane.md,
/// "Balancing on the cluster"). Loads are fractions of a host's vCPUs.
struct BalanceOptions: ParsableArguments {
    @Option(
        name: .customLong("balance-interval"),
        help: ArgumentHelp(
            "Time between two balancing passes (the next starts this long after the previous ended), 1s or more;"
                + " 0 (the default): no periodic pass (POST /v1/balance still runs one).", valueName: "duration"),
        transform: { try DurationOption.parse($0, upTo: 86_400) })
    var interval = DurationOption(seconds: 0, text: "0")

    @Option(
        name: .customLong("balance-threshold"),
        help: ArgumentHelp("A host busier than this (fraction of its vCPUs) gives guests away.", valueName: "load"),
        transform: NumberOption.real(0.01...1, unit: "of a host's vCPUs"))
    var threshold = 0.8

    @Option(
        name: .customLong("balance-target"),
        help: ArgumentHelp(
            "A host receiving a guest stays below the target minus the margin.", valueName: "load"),
        transform: NumberOption.real(0.01...1, unit: "of a host's vCPUs"))
    var target = 0.6

    @Option(
        name: .customLong("balance-margin"),
        help: ArgumentHelp(
            "The hysteresis: kept below the target, and the least a move must bring two hosts' loads closer.",
            valueName: "load"),
        transform: NumberOption.real(0...0.5, unit: "of a host's vCPUs"))
    var margin = 0.05

    @Option(
        name: .customLong("balance-max-moves-per-hour"),
        help: ArgumentHelp(
            "Balancing moves begun in any hour, at most (counted in the database: a restart keeps the count).",
            valueName: "n"),
        transform: NumberOption.count(0...10_000))
    var maxMovesPerHour = 12

    @Option(
        name: .customLong("balance-cool-down"),
        help: ArgumentHelp(
            "A guest that moved (or whose move was tried) less than this long ago stays.", valueName: "duration"),
        transform: { try DurationOption.parse($0, upTo: 86_400) })
    var coolDown = DurationOption(seconds: 600, text: "10m")

    @Option(
        name: .customLong("balance-window"),
        help: ArgumentHelp("The telemetry a guest's load is averaged over.", valueName: "duration"),
        transform: { try DurationOption.parse($0, upTo: 3600) })
    var window = DurationOption(seconds: 60, text: "60s")

    func validate() throws {
        guard interval.seconds == 0 || interval.seconds >= 1 else {
            throw ValidationError("--balance-interval \(interval): 0 (off) or 1s or more")
        }
        guard margin < target, target <= threshold else {
            throw ValidationError(
                "--balance-margin \(margin), --balance-target \(target), --balance-threshold \(threshold): the margin"
                    + " must be below the target and the target at most the threshold, so a host that receives"
                    + " guests stays below the threshold")
        }
        guard window.seconds >= 1 else { throw ValidationError("--balance-window \(window): 1s or more") }
    }

    var settings: BalanceSettings {
        BalanceSettings(
            interval: interval.seconds == 0 ? nil : interval.duration, threshold: threshold, target: target,
            margin: margin, maxMovesPerHour: maxMovesPerHour, coolDown: coolDown.duration, window: window.duration)
    }
}
