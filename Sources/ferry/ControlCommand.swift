import ArgumentParser
import FerryControl
import FerryController
import FerryTransport
import Foundation
import Logging

/// `ferry control`: the control plane of a small cloud (docs/control-plane.md).
struct ControlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control",
        abstract: "Run the controller: agents report to it, users create guests through its API.",
        discussion: """
            Keeps the cluster's state (hosts, catalogue, projects, guests and their journal) in a SQLite \
            file (--database PATH, default STATE-DIR/control.sqlite). Agents started with \
            `ferry agent --controller http://HOST:PORT --key-file K` (the same key) register with their \
            first heartbeat; a host silent for --heartbeat-timeout seconds takes no new guests and its \
            running guests become unknown until it reports again.
            """)

    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp("Where the controller keeps its database (created if missing).", valueName: "dir"))
    var stateDirectory = "/var/lib/ferry-control"

    @Option(help: ArgumentHelp("The database file (default: STATE-DIR/control.sqlite).", valueName: "path"))
    var database: String?

    @Option(help: ArgumentHelp("The API's address; port 0 picks a free port (printed).", valueName: "host:port"))
    var listen = ControllerConfiguration.defaultListen.description

    @Option(
        name: .customLong("key-file"),
        help: ArgumentHelp("The cluster's shared key (the agents' --key-file).", valueName: "path"))
    var keyFile: String

    @Option(
        name: .customLong("heartbeat-timeout"),
        help: ArgumentHelp("Seconds without a heartbeat after which a host counts as silent.", valueName: "seconds"))
    var heartbeatTimeout = 5.0

    @Option(help: ArgumentHelp("Where new guests go: spread (emptiest host) or pack (fullest that fits)."))
    var policy: PlacementPolicy = .spread

    @Flag(name: .shortAndLong, help: "Log at info level on stderr.")
    var verbose = false

    func validate() throws {
        try usageCheck("--listen", listen) { _ = try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) }
        guard (0.2...3600).contains(heartbeatTimeout) else {
            throw ValidationError("--heartbeat-timeout \(heartbeatTimeout): 0.2 to 3600 seconds")
        }
    }

    func run() throws {
        runReportingErrors {
            LoggingBootstrap.once(level: verbose ? .info : .notice)
            let key: SharedKey
            do throws(TransportError) { key = try SharedKey.load(path: keyFile) } catch {
                throw CommandError.configuration(error.message)
            }
            let path = database ?? stateDirectory + "/control.sqlite"
            if database == nil {
                try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
            }
            let store: SQLiteControlStore
            do throws(ControlError) {
                store = try SQLiteControlStore(
                    path: path, policy: policy, heartbeatTimeout: .milliseconds(Int(heartbeatTimeout * 1000)),
                    logger: Logger(label: "ferry.control"))
            } catch {
                throw CommandError.configuration(error.description)
            }
            let configuration = ControllerConfiguration(
                listen: try Endpoint.parse(listen, defaultHost: EndpointOption.defaultHost), key: key,
                heartbeatTimeout: .milliseconds(Int(heartbeatTimeout * 1000)))
            let controller = Controller(
                configuration: configuration, store: store, logger: Logger(label: "ferry.control"))
            do {
                try waitFor {
                    try await controller.run { bound in
                        Terminal.note("controller listening on http://\(bound), database \(path)")
                    }
                }
            } catch {
                guard controller.boundAddress == nil else { throw error }
                throw CommandError(
                    description:
                        "cannot listen on \(configuration.listen) (\(error)): another program may hold that port; pick another --listen",
                    exitCode: 5)
            }
            try? store.close()
            Terminal.note("controller stopped")
        }
    }
}

extension PlacementPolicy: ExpressibleByArgument {}
