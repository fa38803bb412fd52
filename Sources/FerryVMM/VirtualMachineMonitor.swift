import FerryHostModel
import FerryMigration
import FerrySystem
import FerryTransport
import Foundation
import Logging

/// How a `ferry vmm` process starts.
public struct VMMConfiguration: Sendable {
    public enum Start: Sendable {
        /// Boot the guest this specification describes.
        case boot(GuestSpecification)
        /// Wait on this address for one incoming live migration, then run the guest received.
        /// `name`: the guest's name as `hello` reports it (the engine does not carry it).
        case incoming(Endpoint, keyFile: String?, name: FerryHostModel.GuestName?)
        /// Continue the guest `suspend` saved in this file.
        case restore(String)
    }

    public var start: Start
    public var id: GuestID
    public var stateDirectory: String
    /// With `.incoming`: the guest was paused on the source; keep it paused here once received.
    public var startPaused = false
    /// With `.incoming`: how long a migration whose connections were lost during pre-copy waits
    /// for its source to come back (`RESUME`) before it is discarded and the process exits 1
    /// (`ferry vmm --resume-timeout`, `ferry agent --incoming-resume-timeout`).
    public var incomingResumeTimeout = VMMConfiguration.defaultIncomingResumeTimeout
    public static let defaultIncomingResumeTimeout = Duration.seconds(30)

    public init(start: Start, id: GuestID, stateDirectory: String) {
        self.start = start
        self.id = id
        self.stateDirectory = stateDirectory
    }

    /// `STATE_DIR/GUEST_ID.sock`: the name is the guest's ID, so the path is 38 bytes plus the
    /// directory's and always unique; a directory over 69 bytes is refused (sun_path holds 107).
    public static func socketPath(stateDirectory: String, id: GuestID) -> String {
        "\(stateDirectory)/\(id.hex).sock"
    }
    public var socketPath: String { Self.socketPath(stateDirectory: stateDirectory, id: id) }
    public var imagePath: String { "\(stateDirectory)/\(id.hex).img" }
    public var suspendPath: String { "\(stateDirectory)/\(id.hex).suspend" }
    public var logPath: String { "\(stateDirectory)/\(id.hex).log" }
}

/// What a started process tells its starter (the ready line, and `hello`).
public struct VMMReady: Sendable {
    public var socketPath: String
    /// The bound incoming address (with `--incoming`; port 0 resolved).
    public var incoming: String?
}

/// One `ferry vmm` process: owns one guest (its memory, vCPUs and disk), serves the
/// control socket (docs/vmm-control.md), and migrates the guest when told. `prepare()` builds
/// everything and binds the socket; `run()` serves until the guest stops, leaves or is suspended,
/// and returns the exit code.
public final class VirtualMachineMonitor: @unchecked Sendable {
    public let configuration: VMMConfiguration
    let logger: Logger
    let console = ConsoleLog()
    let condition = MonotonicCondition()
    /// Held by `enter` from the change of state until its event is written, so that watchers see
    /// the states in the order they were entered (a thread woken by one change cannot announce
    /// the next before the first is announced).
    private let stateEvents = NSLock()
    /// Held by one lifecycle operation at a time (pause, resume, shutdown, suspend, migrate).
    let operations = MonotonicCondition()
    let startedAt = Date()
    let identity = ProcessIdentity.current ?? ProcessIdentity(pid: getpid(), startTicks: 0)
    // Guarded by `condition`:
    var state = VMMState.migratingIn
    var specification: GuestSpecification?
    var guest: RunningGuest?
    var migration: OutgoingMigration?
    var incomingAddress: String?
    var incomingProgress: MigrationProgress?
    var exitCode: Int32?
    var watchers: [ObjectIdentifier: UnixLineConnection] = [:]
    // Set once by prepare():
    var server: ControlServer?
    var capture: IncomingCapture?
    var incomingAgent: DestinationAgent?
    /// Cancels the incoming migration (SIGTERM while `migrating-in`).
    let incomingCancellation = MigrationCancellation()

    public init(configuration: VMMConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Binds the control socket (replacing a stale one), then boots, restores or starts waiting
    /// for the incoming migration.
    public func prepare() throws(VMMError) -> VMMReady {
        try checkStateDirectory()
        let server = try ControlServer(path: configuration.socketPath, monitor: self)
        self.server = server
        switch configuration.start {
        case .boot(let spec):
            let disk: GuestDisk?
            do throws(VMMError) {
                do { try spec.validate() } catch {
                    throw VMMError(.configuration, "the guest specification's \(error)", cause: error)
                }
                disk = try GuestDisk.resolve(
                    spec, stateDirectory: configuration.stateDirectory, id: configuration.id)
            } catch {
                server.close()
                throw error
            }
            try started(
                booting: { (launcher) throws(VMMError) -> RunningGuest in
                    try launcher.boot(spec, imagePath: configuration.imagePath, disk: disk)
                }, spec)
        case .restore(let path):
            let record = try SuspendRecord.read(from: path)
            guard record.guestID == configuration.id else {
                server.close()
                throw VMMError(
                    .configuration,
                    "\(path) holds guest \(record.guestID), not \(configuration.id); give the --id it was suspended with"
                )
            }
            try started(
                booting: { (launcher) throws(VMMError) -> RunningGuest in try launcher.restore(record) },
                record.specification)
            unlink(path)  // the guest runs on from it: restoring it twice would fork its history
        case .incoming(let endpoint, let keyFile, let name):
            try listenForIncoming(endpoint, keyFile: keyFile, name: name)
        }
        server.start()
        return VMMReady(socketPath: configuration.socketPath, incoming: condition.withLock { incomingAddress })
    }

    private func checkStateDirectory() throws(VMMError) {
        var info = stat()
        guard stat(configuration.stateDirectory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw VMMError(
                .configuration, "--state-dir \(configuration.stateDirectory) is not a directory; create it first")
        }
        _ = try UnixSocketPath.address(configuration.socketPath)
    }

    private func started(
        booting: (GuestLauncher) throws(VMMError) -> RunningGuest, _ spec: GuestSpecification
    ) throws(VMMError) {
        let guest: RunningGuest
        do { guest = try booting(GuestLauncher(logger: logger, console: console)) } catch {
            server?.close()
            throw error
        }
        condition.withLock {
            self.guest = guest
            self.specification = spec
            self.state = .running
        }
        console.append("ferry vmm: \(spec.kind.rawValue) guest \(spec.name) running, \(spec.vcpus) vCPU(s)")
        startProgressTicker()
    }

    /// Serves until the guest stopped, left or was suspended; returns the process's exit code.
    public func run() -> Int32 {
        let code = condition.withLock {
            while exitCode == nil { condition.wait() }
            return exitCode!
        }
        server?.close()
        return code
    }

    /// Ends `run()` with `code` (the first call wins).
    func exit(_ code: Int32) {
        condition.withLock {
            if exitCode == nil { exitCode = code }
            condition.broadcast()
        }
    }

    /// Changes the state and tells the watchers.
    func enter(_ next: VMMState, reason: String? = nil) {
        stateEvents.lock()
        defer { stateEvents.unlock() }
        condition.withLock {
            state = next
            condition.broadcast()
        }
        var event: [String: JSONValue] = ["state": .string(next.rawValue)]
        if let reason { event["reason"] = .string(reason) }
        console.append("ferry vmm: \(next.rawValue)\(reason.map { " (\($0))" } ?? "")")
        broadcast("state", event)
        logger.info("state", metadata: ["vmm.state": "\(next.rawValue)", "vmm.reason": "\(reason ?? "")"])
    }

    /// Writes an event to every watcher; one that is gone is dropped.
    func broadcast(_ name: String, _ fields: [String: JSONValue]) {
        var object = fields
        object["event"] = .string(name)
        object["time"] = .number(Date().timeIntervalSince1970)
        let line = JSONValue.object(object).line
        let current = condition.withLock { watchers }
        for (key, connection) in current where !connection.writeLine(line) {
            _ = condition.withLock { watchers.removeValue(forKey: key) }
        }
    }

    func addWatcher(_ connection: UnixLineConnection) {
        condition.withLock { watchers[ObjectIdentifier(connection)] = connection }
    }

    func removeWatcher(_ connection: UnixLineConnection) {
        _ = condition.withLock { watchers.removeValue(forKey: ObjectIdentifier(connection)) }
    }

    /// The built-in guest has no console: once a second, its progress goes there instead.
    func startProgressTicker() {
        let thread = Thread { [weak self] in
            while let self, self.condition.withLock({ !self.state.isFinal && self.exitCode == nil }) {
                let (guest, state) = self.condition.withLock { (self.guest, self.state) }
                if let guest, guest.kind == .builtin, state == .running || state == .migratingOut {
                    let steps = guest.stepsPerVCPU
                    self.console.append(
                        "progress: vCPU steps \(steps.map(String.init).joined(separator: ",")) (total \(steps.reduce(0, +)))"
                    )
                }
                Thread.sleep(forTimeInterval: 1)
            }
        }
        thread.name = "ferry-vmm-ticker"
        thread.start()
    }
}
