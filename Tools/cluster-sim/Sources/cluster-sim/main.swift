import FerryDecisions
import Glibc

// cluster-sim SCENARIO [options]: see Tools/cluster-sim/README.md.
var arguments = Array(CommandLine.arguments.dropFirst())
guard let scenario = arguments.first, !scenario.hasPrefix("-") else {
    printError(PlacementBenchmark.Options.usage + "\n" + ScalingBenchmark.Options.usage)
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
case "-h", "--help", "help":
    print(PlacementBenchmark.Options.usage + "\n" + ScalingBenchmark.Options.usage)
default:
    printError(
        "cluster-sim: no scenario \(scenario) (there is: placement, scaling, drain)\n\n"
            + PlacementBenchmark.Options.usage + "\n" + ScalingBenchmark.Options.usage)
    exit(2)
}

/// Writes `text` to standard error.
func printError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
