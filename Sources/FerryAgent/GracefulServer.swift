import FerryTransport
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import UnixSignals

/// One Hummingbird server run as the only service of a `ServiceGroup`, as the agent and the
/// controller serve: a graceful stop on `signals` or on `stop()` (no new connections, requests in
/// flight finish within `shutdownGrace`), even when `stop()` came before the server listened; and
/// the address it bound once it listens (port 0 asks the kernel for one).
public final class GracefulServer: Sendable {
    private let state = Mutex<(bound: Endpoint?, group: ServiceGroup?, stopRequested: Bool)>((nil, nil, false))

    public init() {}

    /// Where the server listens, nil until it does.
    public var boundAddress: Endpoint? { state.withLock { $0.bound } }

    /// Serves `router` on `listen` until a graceful stop. `onListening` runs once the listener is
    /// up, with the bound address (already `boundAddress`).
    public func run<Context: RequestContext>(
        _ router: Router<Context>, listen: Endpoint, shutdownGrace: Duration, signals: [UnixSignal],
        logger: Logger, onListening: @escaping @Sendable (Endpoint) -> Void
    ) async throws where Context.Source == ApplicationRequestContextSource {
        let host = listen.host
        let application = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: Int(listen.port)), serverName: nil),
            onServerRunning: { [self] channel in
                let bound = Endpoint(host: host, port: UInt16(channel.localAddress?.port ?? 0))
                state.withLock { $0.bound = bound }
                onListening(bound)
            },
            logger: logger)
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: application)], gracefulShutdownSignals: signals, cancellationSignals: [],
            logger: logger)
        configuration.maximumGracefulShutdownDuration = shutdownGrace
        let group = ServiceGroup(configuration: configuration)
        let stopEarly = state.withLock { state -> Bool in
            state.group = group
            return state.stopRequested
        }
        if stopEarly { await group.triggerGracefulShutdown() }
        try await group.run()
    }

    /// Stops as SIGTERM would; `run` returns once requests in flight finished.
    public func stop() async {
        let group = state.withLock { state -> ServiceGroup? in
            state.stopRequested = true
            return state.group
        }
        await group?.triggerGracefulShutdown()
    }
}
