import FerryDecisions
import Glibc

// cluster-sim SCENARIO [options]: see Tools/cluster-sim/README.md.
let usage = [
    PlacementBenchmark.Options.usage, ScalingBenchmark.Options.usage, BalanceBenchmark.Options.usage,
    ConsolidationBenchmark.Options.usage, DrainBenchmark.Options.usage,
].joined(separator: "\n")
var arguments = Array(CommandLine.arguments.dropFirst())
guard let scenario = arguments.first, !scenario.hasPrefix("-") else {
    printError(usage)
    exit(2)
}
arguments.removeFirst()
switch scenario {
case "placement":
    do {
        let options = try PlacementBenchmark.Options(arguments)
        exit(PlacementBenchmark(options: options).run() ? 0 : 1)
    } catch {
        printError("cluster-sim placement: \(error)\n\n\(PlacementBenchmark.Options.usage)")
        exit(2)
    }
case "scaling":
    do {
        let options = try ScalingBenchmark.Options(arguments)
        exit(try ScalingBenchmark(options: options).run() ? 0 : 1)
    } catch {
        printError("cluster-sim scaling: \(error)\n\n\(ScalingBenchmark.Options.usage)")
        exit(2)
    }
case "drain":
    do {
        let options = try DrainBenchmark.Options(arguments)
        exit(DrainBenchmark(options: options).run() ? 0 : 1)
    } catch {
        printError("cluster-sim drain: \(error)\n\n\(DrainBenchmark.Options.usage)")
        exit(2)
    }
case "balance":
    do {
        let options = try BalanceBenchmark.Options(arguments)
        exit(BalanceBenchmark(options: options).run() ? 0 : 1)
    } catch {
        printError("cluster-sim balance: \(error)\n\n\(BalanceBenchmark.Options.usage)")
        exit(2)
    }
case "consolidate":
    do {
        let options = try ConsolidationBenchmark.Options(arguments)
        exit(ConsolidationBenchmark(options: options).run() ? 0 : 1)
    } catch {
        printError("cluster-sim consolidate: \(error)\n\n\(ConsolidationBenchmark.Options.usage)")
        exit(2)
    }
case "-h", "--help", "help":
    print(usage)
default:
    printError(
        "cluster-sim: no scenario \(scenario) (there is: placement, scaling, balance, consolidate, drain)\n\n"
            + usage)
    exit(2)
}

/// Writes `text` to standard error.
func printError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
