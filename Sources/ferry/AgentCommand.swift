import ArgumentParser
import Dispatch
import FerryAgent
import FerrySystem
import FerryTransport
import Foundation
import Glibc
import Logging
import Synchronization

/// `ferry agent`: the host agent daemon (docs/agent.md).
struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the host agent: an authenticated HTTP API on this host (docs/agent.md, docs/agent-api.yaml).",
        discussion: """
            Locks --state-dir (one agent per directory; a second is refused with the holder's PID, exit 9), \
            creates its layout, and serves the API until SIGTERM or SIGINT: then it stops accepting \
            connections, lets requests in flight finish (at most --shutdown-grace seconds) and exits 0. \
            Before it listens it reconciles its inventory (STATE/inventory.sqlite) with the guests' \
            processes: it adopts what runs, marks a vanished process crashed, and never kills or deletes. \
            Guests run in their own processes and are never stopped by the agent's stop. Every request \
            except GET /healthz is signed with the shared key (--key-file; `ferry keygen` makes one).
            """)

    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp(
            "The agent's directory: lock, guests, disks, inventory (created if missing).", valueName: "dir"))
    var stateDirectory: String

    @Option(
        help: ArgumentHelp(
            "The API's address; a port alone means 127.0.0.1. Port 0 picks a free port (printed).",
            valueName: "host:port"))
    var listen = AgentConfiguration.defaultListen.description

    @Option(
        name: .customLong("migration-listen"),
        help: ArgumentHelp(
            "Where arriving guests' ferry vmm --incoming listen: its host (each takes a free port; the port is reported by GET /v1/host).",
            valueName: "host:port"))
    var migrationListen = AgentConfiguration.defaultMigrationListen.description

    @Option(
        name: .customLong("key-file"),
        help: ArgumentHelp(
            "The shared key (64 hex digits, mode 0600; `ferry keygen --out FILE`): clients sign every request with it.",
            valueName: "path"))
    var keyFile: String?

    @Option(
        name: .customLong("metrics-token-file"),
        help: ArgumentHelp(
            "A read-only bearer token for GET /metrics (16 to 512 visible characters, mode 0600; e.g. `openssl rand -hex 32`): `Authorization: Bearer TOKEN` reads /metrics and nothing else, for Prometheus.",
            valueName: "path"))
    var metricsTokenFile: String?

    @Option(
        name: .customLong("incoming-reservation"),
        help: ArgumentHelp(
            "Seconds an incoming migration's reservation waits for its source to connect before it is abandoned.",
            valueName: "seconds"))
    var incomingReservation = 60

    @Option(
        name: .customLong("incoming-resume-timeout"),
        help: ArgumentHelp(
            "How long an arriving guest's ferry vmm --incoming waits for a source whose connections were lost during pre-copy to come back before it gives the migration up (its --resume-timeout; like 500ms, 5s or 2m, a number alone is seconds; 0: at once; at most 1h; default 30s).",
            valueName: "duration"),
        transform: { try DurationOption.parse($0, upTo: 3600) })
    var incomingResumeTimeout = DurationOption(seconds: 30, text: "30s")

    @Option(
        name: .customLong("shutdown-grace"),
        help: ArgumentHelp("Seconds a stop waits for requests in flight.", valueName: "seconds"))
    var shutdownGrace = 30

    @Option(
        help: ArgumentHelp(
            "A controller (`ferry control`) to report to: a heartbeat every second registers this host and its guests.",
            valueName: "http://host:port"))
    var controller: String?

    @Option(
        name: .customLong("heartbeat-interval"),
        help: ArgumentHelp(
            "Between two heartbeats to --controller (like 500ms or 2s; 100ms to 60s; default 1s).",
            valueName: "duration"),
        transform: { try DurationOption.parse($0, upTo: 60) })
    var heartbeatInterval = DurationOption(seconds: 1, text: "1s")

    @Option(
        name: .customLong("watch-interval"),
        help: ArgumentHelp(
            "How often the guests are looked at between heartbeats: a guest that changed state, or whose CPU use moved by 25 points or load by 25%, is reported at once (a scaling policy sees a spike within a look or two; 0: only every --heartbeat-interval; default 200ms).",
            valueName: "duration"),
        transform: { try DurationOption.parse($0, upTo: 60) })
    var watchInterval = DurationOption(seconds: 0.2, text: "200ms")

    @Option(
        name: .customLong("host-id"),
        help: ArgumentHelp("This host's name in the cluster (default: the machine's hostname).", valueName: "name"))
    var hostID: String?

    @Option(
        name: .customLong("advertise-url"),
        help: ArgumentHelp(
            "This agent's API as the controller reaches it (default: the bound --listen address; needed when it is 0.0.0.0).",
            valueName: "http://host:port"))
    var advertiseURL: String?

    @Option(
        name: .customLong("offer-vcpus"),
        help: ArgumentHelp(
            "vCPUs offered to the controller (default: the machine's; more overcommits).", valueName: "n"))
    var offerVCPUs: Int?

    @Option(
        name: .customLong("offer-memory-mib"),
        help: ArgumentHelp("Memory offered to the controller, in MiB (default: the machine's).", valueName: "MiB"))
    var offerMemoryMiB: Int?

    @Option(
        name: .customLong("offer-disk-gib"),
        help: ArgumentHelp(
            "Disk offered to the controller, in GiB (default: the state directory's file system).", valueName: "GiB"))
    var offerDiskGiB: Int?

    @Option(
        name: .customLong("health-dir"),
        help: ArgumentHelp(
            "Where the host's hardware signals are read on every look (--watch-interval): edac/mc/mcN/{ce_count,ue_count}, smart/NAME.json (smartctl --json -A), ipmi/sel (ipmitool sel elist); a failing host is quarantined by the controller (docs/agent.md; default: none, the hardware is healthy).",
            valueName: "dir"))
    var healthDirectory: String?

    @OptionGroup(title: "Health thresholds (with --health-dir)") var health: HealthOptions

    @Flag(
        name: .customLong("no-kvm"),
        help: ArgumentHelp(
            "Tell the controller this host runs no KVM guests, even when /dev/kvm is usable: its scheduler places no guest of a kvm image here (default: offered when GET /v1/host finds /dev/kvm usable)."
        ))
    var noKVM = false

    @Flag(name: .shortAndLong, help: "Log at info level on stderr (each request at debug with --debug).")
    var verbose = false

    @Flag(help: "Log at debug level on stderr.")
    var debug = false

    func validate() throws {
        try usageCheck("--listen", listen) { _ = try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) }
        try usageCheck("--migration-listen", migrationListen) {
            _ = try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost)
        }
        if keyFile == nil {
            throw ValidationError(
                "ferry agent needs --key-file: every API request is signed with the shared key (make one with `ferry keygen --out FILE`)"
            )
        }
        guard (1...3600).contains(incomingReservation) else {
            throw ValidationError("--incoming-reservation \(incomingReservation): 1 to 3600 seconds")
        }
        guard heartbeatInterval.seconds >= 0.1 else {
            throw ValidationError("--heartbeat-interval \(heartbeatInterval): at least 100ms")
        }
        guard (1...3600).contains(shutdownGrace) else {
            throw ValidationError("--shutdown-grace \(shutdownGrace): 1 to 3600 seconds")
        }
        try validateControllerLink()
    }

    private func validateControllerLink() throws {
        let linkOptions: [(String, Bool)] = [
            ("--host-id", hostID != nil), ("--advertise-url", advertiseURL != nil),
            ("--offer-vcpus", offerVCPUs != nil),
            ("--offer-memory-mib", offerMemoryMiB != nil), ("--offer-disk-gib", offerDiskGiB != nil),
            ("--no-kvm", noKVM),
        ]
        guard let controller else {
            if let (name, _) = linkOptions.first(where: { $0.1 }) {
                throw ValidationError("\(name) tells a controller about this host: give --controller too")
            }
            return
        }
        for (name, url) in [("--controller", controller), ("--advertise-url", advertiseURL)] {
            if let url, !url.hasPrefix("http://") {
                throw ValidationError("\(name) \(url): an http://HOST:PORT address")
            }
        }
        if advertiseURL == nil, listen.hasPrefix("0.0.0.0") {
            throw ValidationError(
                "--listen \(listen) is every address: give --advertise-url with the one the controller reaches")
        }
        for (name, value) in [
            ("--offer-vcpus", offerVCPUs), ("--offer-memory-mib", offerMemoryMiB), ("--offer-disk-gib", offerDiskGiB),
        ] {
            if let value, value < 0 { throw ValidationError("\(name) \(value): zero or more") }
        }
        if let hostID, hostID.isEmpty || hostID.utf8.count > 63 {
            throw ValidationError("--host-id: 1 to 63 characters")
        }
    }

    private var controllerLink: ControllerLinkConfiguration? {
        controller.map {
            ControllerLinkConfiguration(
                controllerURL: $0, hostID: hostID ?? ProcessInfo.processInfo.hostName, advertiseURL: advertiseURL,
                offerVCPUs: offerVCPUs, offerMemoryBytes: offerMemoryMiB.map { $0 << 20 },
                offerDiskBytes: offerDiskGiB.map { $0 << 30 }, offerKVM: !noKVM, interval: heartbeatInterval.duration,
                watchInterval: watchInterval.seconds > 0 ? watchInterval.duration : nil)
        }
    }

    /// The key file as an absolute path (the guests' vmms run in other directories).
    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + path
    }

    func run() throws {
        runReportingErrors {
            LoggingBootstrap.once(level: debug ? .debug : (verbose ? .info : .notice))
            let key: SharedKey
            do throws(TransportError) { key = try SharedKey.load(path: keyFile!) } catch {
                throw CommandError.configuration(error.message)
            }
            let metricsToken: MetricsToken?
            do throws(MetricsTokenError) {
                metricsToken = try metricsTokenFile.map { path throws(MetricsTokenError) in
                    try MetricsToken.load(path: path)
                }
            } catch {
                throw CommandError.configuration(error.message)
            }
            let configuration = AgentConfiguration(
                stateDirectory: stateDirectory,
                listen: try Endpoint.parse(listen, defaultHost: EndpointOption.defaultHost),
                migrationListen: try Endpoint.parse(migrationListen, defaultHost: EndpointOption.defaultHost),
                key: key, keyFile: keyFile.map(Self.absolute),
                version: FerryVersion.release, shutdownGrace: .seconds(shutdownGrace),
                incomingReservationSeconds: Double(incomingReservation),
                incomingResumeTimeout: incomingResumeTimeout.duration, metricsToken: metricsToken,
                controller: controllerLink, healthDirectory: healthDirectory.map(Self.absolute),
                healthThresholds: health.thresholds)
            let agent: Agent
            do {
                agent = try Agent(configuration: configuration, logger: Logger(label: "ferry.agent"))
            } catch let error as SystemError {
                throw error
            } catch {
                // The inventory cannot be used (damaged, newer, locked): its message says what to do.
                throw CommandError.configuration("\(error)")
            }
            do {
                try waitFor {
                    try await agent.run { bound in
                        Terminal.note(
                            "agent listening on http://\(bound), state directory \(agent.stateDirectory.path)")
                    }
                }
            } catch {
                // Before anything listens, the server's failure is a bind (NIO's words): say which address.
                guard agent.boundAddress == nil else { throw error }
                throw CommandError(
                    description:
                        "cannot listen on \(configuration.listen) (\(error)): another program (another agent?) may hold that port; pick another --listen",
                    exitCode: 5)
            }
            Terminal.note("agent stopped; guests were left running")
        }
    }
}

/// Runs `body` on the cooperative pool and blocks this (the main) thread until it ends; what it
/// throws is rethrown here.
func waitFor(_ body: @escaping @Sendable () async throws -> Void) throws {
    let failure = Mutex<(any Error)?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        do { try await body() } catch { failure.withLock { $0 = error } }
        done.signal()
    }
    done.wait()
    if let error = failure.withLock({ $0 }) { throw error }
}
