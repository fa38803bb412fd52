import ArgumentParser
import FerryControl
import FerryControlPostgres
import FerryController
import FerryGuest
import FerryTransport
import Foundation
import Logging
import Synchronization

/// `ferry control`: the control plane of a small cloud (docs/control-plane.md).
struct ControlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control",
        abstract: "Run the controller: agents report to it, users create guests through its API.",
        discussion: """
            Keeps the cluster's state (hosts, catalogue, projects, guests and their journal) in a SQLite \
            file (--database PATH, default STATE-DIR/control.sqlite), or in PostgreSQL \
            (--database postgres://USER:PASSWORD@HOST:PORT/DATABASE), where several controllers can share \
            it: their writes are serialised, so two never place guests into the same capacity. Agents started with \
            `ferry agent --controller http://HOST:PORT --key-file K` (the same key) register with their \
            first heartbeat; a host silent for --heartbeat-timeout seconds takes no new guests and its \
            running guests become unknown until it reports again.
            """)

    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp("Where the controller keeps its database (created if missing).", valueName: "dir"))
    var stateDirectory = "/var/lib/ferry-control"

    @Option(
        help: ArgumentHelp(
            "The SQLite file (default: STATE-DIR/control.sqlite), or a postgres://user:password@host:port/database URL that several controllers may share.",
            valueName: "path|url"))
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

    @Option(
        name: .customLong("boot-timeout"),
        help: ArgumentHelp(
            "Seconds a build waits for its host to boot the guest (and for a KVM guest's first console line)"
                + " before the guest is error.", valueName: "seconds"))
    var bootTimeout = 60.0

    @Option(
        name: .customLong("move-timeout"),
        help: ArgumentHelp(
            "Seconds a guest's live migration to another host (POST /v1/guests/ID/migrate) may take before it is"
                + " cancelled and the guest stays on its host.", valueName: "seconds"))
    var moveTimeout = 300.0

    @Option(
        name: .customLong("cold-move-timeout"),
        help: ArgumentHelp(
            "Seconds a guest's cold move (a drain's fallback for a guest of policy live_then_cold that cannot go live)"
                + " may take before it is cancelled; a cancel is honoured until the destination registers the guest.",
            valueName: "seconds"))
    var coldMoveTimeout = 1800.0

    @Option(
        name: .customLong("max-moves-per-host"),
        help: ArgumentHelp(
            "Live migrations that may run in or out of one host at once: a move the controller chooses (a lease's"
                + " delivery, a group's consolidation) waits for its turn, one asked through the API is refused (409).",
            valueName: "n"))
    var maxMovesPerHost = 2

    @Option(
        name: .customLong("link-rate"),
        help: ArgumentHelp(
            "What a host's link carries, like 10Gbit/s or 1Gbit/s: a drain's cost model starts from it to choose how"
                + " many guests leave at once (the migrations' own measurements then take over).",
            valueName: "rate"), transform: RateOption.bandwidth)
    var linkRate = Rate(bytesPerSecond: 1.25e9)

    @Option(
        name: .customLong("drain-concurrency"),
        help: ArgumentHelp(
            "Guests that leave a draining host at once, instead of the cost model's choice (which goes up to"
                + " --max-moves-per-host); the limit per host still applies.", valueName: "n"))
    var drainConcurrency: Int?

    @Option(
        name: .customLong("consolidate-headroom"),
        help: ArgumentHelp(
            "The share of each host's capacity a consolidation (POST /v1/consolidate) keeps free on the hosts that"
                + " receive guests, 0 to 0.9.", valueName: "fraction"))
    var consolidateHeadroom = 0.1

    @Option(
        name: .customLong("consolidate-below"),
        help: ArgumentHelp(
            "Consolidate by itself when the guests hold less than this share of the hosts that are on (in their"
                + " fullest dimension), looked at every --consolidate-interval; off by default.",
            valueName: "fraction"))
    var consolidateBelow: Double?

    @Option(
        name: .customLong("consolidate-interval"),
        help: ArgumentHelp("Seconds between two looks of --consolidate-below.", valueName: "seconds"))
    var consolidateInterval = 300.0

    @Option(
        name: .customLong("scaling-interval"),
        help: ArgumentHelp(
            "Seconds between two passes of the auto-scaling groups (their policies decide, their members follow).",
            valueName: "seconds"))
    var scalingInterval = 1.0

    @OptionGroup(title: "Load balancing") var balance: BalanceOptions

    @Option(help: ArgumentHelp("Where new guests go: spread (emptiest host) or pack (fullest that fits)."))
    var policy: PlacementPolicy = .spread

    @Flag(name: .shortAndLong, help: "Log at info level on stderr.")
    var verbose = false

    func validate() throws {
        try usageCheck("--listen", listen) { _ = try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) }
        guard (0.2...3600).contains(heartbeatTimeout) else {
            throw ValidationError("--heartbeat-timeout \(heartbeatTimeout): 0.2 to 3600 seconds")
        }
        guard (1...3600).contains(bootTimeout) else {
            throw ValidationError("--boot-timeout \(bootTimeout): 1 to 3600 seconds")
        }
        guard (1...86_400).contains(moveTimeout) else {
            throw ValidationError("--move-timeout \(moveTimeout): 1 to 86400 seconds")
        }
        guard (1...86_400).contains(coldMoveTimeout) else {
            throw ValidationError("--cold-move-timeout \(coldMoveTimeout): 1 to 86400 seconds")
        }
        guard (1...64).contains(maxMovesPerHost) else {
            throw ValidationError("--max-moves-per-host \(maxMovesPerHost): 1 to 64")
        }
        if let drainConcurrency, !(1...64).contains(drainConcurrency) {
            throw ValidationError("--drain-concurrency \(drainConcurrency): 1 to 64")
        }
        guard (0...0.9).contains(consolidateHeadroom) else {
            throw ValidationError("--consolidate-headroom \(consolidateHeadroom): 0 to 0.9")
        }
        if let consolidateBelow, !(0...1).contains(consolidateBelow) {
            throw ValidationError("--consolidate-below \(consolidateBelow): 0 to 1")
        }
        guard (1...86_400).contains(consolidateInterval) else {
            throw ValidationError("--consolidate-interval \(consolidateInterval): 1 to 86400 seconds")
        }
        guard (0.1...3600).contains(scalingInterval) else {
            throw ValidationError("--scaling-interval \(scalingInterval): 0.1 to 3600 seconds")
        }
    }

    func run() throws {
        runReportingErrors {
            LoggingBootstrap.once(level: verbose ? .info : .notice)
            let key: SharedKey
            do throws(TransportError) { key = try SharedKey.load(path: keyFile) } catch {
                throw CommandError.configuration(error.message)
            }
            let opened = try openStore()
            let configuration = ControllerConfiguration(
                listen: try Endpoint.parse(listen, defaultHost: EndpointOption.defaultHost), key: key,
                heartbeatTimeout: .milliseconds(Int(heartbeatTimeout * 1000)),
                bootTimeout: .milliseconds(Int(bootTimeout * 1000)),
                moveTimeout: .milliseconds(Int(moveTimeout * 1000)), maxMovesPerHost: maxMovesPerHost,
                scalingInterval: .milliseconds(Int(scalingInterval * 1000)), linkBytesPerSecond: linkRate.value,
                drainConcurrency: drainConcurrency, consolidateHeadroom: consolidateHeadroom,
                consolidateBelow: consolidateBelow,
                consolidateInterval: .milliseconds(Int(consolidateInterval * 1000)),
                coldMoveTimeout: .milliseconds(Int(coldMoveTimeout * 1000)), balance: balance.settings)
            let controller: Controller
            do throws(ControlError) {
                controller = try Controller(
                    configuration: configuration, store: opened.store, logger: Logger(label: "ferry.control"))
            } catch {
                throw CommandError.configuration(error.description)
            }
            do {
                try waitFor {
                    try await controller.run { bound in
                        Terminal.note("controller listening on http://\(bound), database \(opened.description)")
                    }
                }
            } catch {
                guard controller.boundAddress == nil else { throw error }
                throw CommandError(
                    description:
                        "cannot listen on \(configuration.listen) (\(error)): another program may hold that port; pick another --listen",
                    exitCode: 5)
            }
            try? waitFor { await opened.close() }
            Terminal.note("controller stopped")
        }
    }

    /// The store `--database` names, what to call it in messages, and how to close it.
    private func openStore() throws -> (
        store: any ControlStore & AccountStore, description: String, close: @Sendable () async -> Void
    ) {
        let timeout = Duration.milliseconds(Int(heartbeatTimeout * 1000))
        let logger = Logger(label: "ferry.control")
        if let url = database, url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            let opened = Mutex<Result<PostgresControlStore, ControlError>?>(nil)
            try waitFor { [policy] in
                let result: Result<PostgresControlStore, ControlError>
                do throws(ControlError) {
                    result = .success(
                        try await PostgresControlStore.connect(
                            url: url, policy: policy, heartbeatTimeout: timeout, logger: logger))
                } catch { result = .failure(error) }
                opened.withLock { $0 = result }
            }
            switch opened.withLock({ $0 }) {
            case .success(let store): return (store, "\(store.url)", { await store.close() })
            case .failure(let error): throw CommandError.configuration(error.description)
            case nil: throw CommandError.configuration("connecting to \(url) did not finish")
            }
        }
        let path = database ?? stateDirectory + "/control.sqlite"
        if database == nil {
            try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        }
        do throws(ControlError) {
            let store = try SQLiteControlStore(path: path, policy: policy, heartbeatTimeout: timeout, logger: logger)
            return (store, path, { try? store.close() })
        } catch {
            throw CommandError.configuration(error.description)
        }
    }
}

extension PlacementPolicy: ExpressibleByArgument {}
