import FerryAgent
import FerryControl
import FerryTransport
import Foundation
import Hummingbird
import Logging
import UnixSignals

/// The control plane (`ferry control`): serves the API over a `ControlStore`, takes the agents'
/// heartbeats, builds guests on their hosts, moves them between hosts, and watches for silent
/// hosts. All of its state is in the store; a controller that restarts resumes the builds it had
/// begun and settles the moves.
public final class Controller: Sendable {
    public let configuration: ControllerConfiguration
    public let store: any ControlStore & AccountStore
    let accounts: AccountService
    let verifier: RequestVerifier
    let work = BlockingWork()
    let provisioner: GuestProvisioner
    let mover: GuestMover
    let leases: LeaseKeeper
    let hosts: HostTracking
    let scaler: GroupScaler
    let drainer: HostDrainer
    let consolidator: HostConsolidator
    let balancer: ClusterBalancer
    let logger: Logger
    private let server = GracefulServer()

    /// Takes a password hash's time (the dummy hash that unknown user names are checked against).
    public init(
        configuration: ControllerConfiguration, store: any ControlStore & AccountStore, logger: Logger
    ) throws(ControlError) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        accounts = try AccountService(
            store: store, hashParameters: configuration.passwordHashParameters,
            logger: Logger(label: logger.label + ".accounts"))
        let listen = configuration.listen
        verifier = RequestVerifier(
            signature: RequestSignature(key: configuration.key), windowSeconds: configuration.credentialWindowSeconds,
            notBefore: Int64(Date().timeIntervalSince1970),
            audience: listen.port == 0 ? nil : RequestAudience(listen: listen))
        provisioner = GuestProvisioner(
            store: store, key: configuration.key, work: work, bootTimeout: configuration.bootTimeout, logger: logger)
        mover = GuestMover(
            store: store, key: configuration.key, work: work, timeout: configuration.moveTimeout,
            maxMovesPerHost: configuration.maxMovesPerHost, coldTimeout: configuration.coldMoveTimeout, logger: logger)
        let drainer = HostDrainer(
            store: store, mover: mover, linkBytesPerSecond: configuration.linkBytesPerSecond,
            maxConcurrency: configuration.maxMovesPerHost, heartbeatTimeout: configuration.heartbeatTimeout,
            forcedConcurrency: configuration.drainConcurrency, logger: logger)
        let scaler = GroupScaler(
            store: store, provisioner: provisioner, mover: mover, heartbeatTimeout: configuration.heartbeatTimeout,
            logger: logger)
        self.scaler = scaler
        self.drainer = drainer
        consolidator = HostConsolidator(
            store: store, mover: mover, drainer: drainer, power: provisioner.power,
            headroom: configuration.consolidateHeadroom, heartbeatTimeout: configuration.heartbeatTimeout,
            logger: logger)
        balancer = ClusterBalancer(
            store: store, mover: mover, drainer: drainer, scaler: scaler, settings: configuration.balance,
            heartbeatTimeout: configuration.heartbeatTimeout, logger: logger)
        hosts = HostTracking(
            store: store, heartbeatTimeout: configuration.heartbeatTimeout, logger: logger,
            onQuarantine: { host in Task { await drainer.evacuate(host) } }, onTelemetry: { scaler.nudge() })
        leases = LeaseKeeper(
            store: store, provisioner: provisioner, heartbeatTimeout: configuration.heartbeatTimeout, logger: logger
        ) { [mover] id, host, cause async throws(ControlError) in
            _ = try await mover.move(id, to: host, cause: cause)
        }
    }

    public var boundAddress: Endpoint? { server.boundAddress }

    /// "METHOD /path" of every route the API serves (docs/controller-api.yaml lists the same).
    public var routes: [String] {
        makeRouter().routes.map { "\($0.method.rawValue) \($0.path)" }.sorted()
    }

    /// Serves until a graceful stop (SIGTERM, SIGINT or `stop()`).
    public func run(
        signals: [UnixSignal] = [.sigterm, .sigint], onListening: @escaping @Sendable (Endpoint) -> Void = { _ in }
    ) async throws {
        try await provisioner.resume()
        try await mover.resume()
        try await drainer.resume()
        let monitor = Task { [hosts, configuration] in await hosts.watch(every: configuration.monitorInterval) }
        let keeper = Task { [leases, configuration] in await leases.watch(every: configuration.monitorInterval) }
        let scaling = Task { [scaler, configuration] in await scaler.run(every: configuration.scalingInterval) }
        let consolidating = Task { [consolidator, configuration] in
            guard let below = configuration.consolidateBelow else { return }
            await consolidator.watch(below: below, every: configuration.consolidateInterval)
        }
        let balancing = Task { [balancer] in await balancer.run() }
        defer {
            consolidating.cancel()
            monitor.cancel()
            keeper.cancel()
            scaling.cancel()
            balancing.cancel()
        }
        try await server.run(
            makeRouter(), listen: configuration.listen, shutdownGrace: configuration.shutdownGrace, signals: signals,
            logger: logger
        ) { [verifier] bound in
            verifier.serve(RequestAudience(listen: bound))
            onListening(bound)
        }
        await work.shutdown()
        logger.info("controller stopped")
    }

    public func stop() async { await server.stop() }

    func makeRouter() -> Router<ControllerContext> {
        let router = Router(context: ControllerContext.self)
        router.add(middleware: CloudErrorMiddleware())
        router.add(
            middleware: CloudAuthenticationMiddleware(
                verifier: verifier, accounts: accounts, bodyLimitBytes: configuration.bodyLimitBytes))
        router.get("/healthz") { _, _ in "ok\n" }
        AccountRoutes(accounts: accounts, store: store, secureCookies: configuration.secureCookies).add(to: router)
        CloudRoutes(
            store: store, provisioner: provisioner, hosts: hosts, heartbeatTimeout: configuration.heartbeatTimeout
        ).add(to: router)
        CatalogueRoutes(store: store).add(to: router)
        LeaseRoutes(store: store).add(to: router)
        MoveRoutes(store: store, mover: mover).add(to: router)
        DrainRoutes(store: store, drainer: drainer).add(to: router)
        ConsolidateRoutes(
            store: store, consolidator: consolidator, power: provisioner.power,
            heartbeatTimeout: configuration.heartbeatTimeout
        ).add(to: router)
        BalanceRoutes(balancer: balancer).add(to: router)
        GroupRoutes(store: store).add(to: router)
        ConsoleRoutes(
            accounts: accounts, store: store, provisioner: provisioner, mover: mover, drainer: drainer,
            key: configuration.key,
            work: work,
            heartbeatTimeout: configuration.heartbeatTimeout, secureCookies: configuration.secureCookies
        ).add(to: router)
        return router
    }
}
