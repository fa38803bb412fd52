import ArgumentParser
import FerryHostModel
import FerrySystem
import FerryTransport
import FerryVMM
import Foundation
import Glibc
import Logging

struct VMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmm",
        abstract: "Run one guest in a process of its own, driven through a control socket (docs/vmm-control.md).",
        discussion: """
            Give exactly one of --spec (boot the guest a GuestSpecification JSON file describes), \
            --incoming (wait for one live migration and run the guest it brings) or --restore (continue \
            a guest that suspend saved). The control socket is STATE_DIR/GUEST_ID.sock (mode 0600); \
            the guest's memory image is STATE_DIR/GUEST_ID.img; the specification's one disk (a \
            second is refused) is at its path or STATE_DIR/GUEST_ID.NAME.disk. When ready, one line goes to stdout: \
            `ready guest=ID pid=PID socket=PATH [incoming=HOST:PORT]`. Exit 0 after shutdown, suspend \
            or a completed outgoing migration; 1 when an incoming migration fails; 9 bad configuration \
            (also a socket a live process serves); 8 a system call failed.
            """)

    @Option(help: ArgumentHelp("Boot the guest this GuestSpecification JSON file describes.", valueName: "file"))
    var spec: String?

    @Option(
        help: ArgumentHelp(
            "Wait on this address for one incoming live migration (port 0: any free port).", valueName: "host:port"))
    var incoming: String?

    @Option(help: ArgumentHelp("Continue the guest saved in this suspend file.", valueName: "file"))
    var restore: String?

    @Option(help: "The guest's ID: 32 lower-case hex digits (the agent's inventory holds it).")
    var id: String

    @Option(
        name: .customLong("state-dir"), help: "Where the socket, image, suspend file and log go (at most 69 bytes).")
    var stateDir: String

    @Option(name: .customLong("key-file"), help: "With --incoming: the shared key sources must prove they hold.")
    var keyFile: String?

    @Option(help: "With --incoming: the guest's name as hello reports it.")
    var name: String?

    @Flag(help: "With --incoming: keep the guest paused once received (it was paused on the source).")
    var paused = false

    @Option(
        name: .customLong("resume-timeout"),
        help: ArgumentHelp(
            "With --incoming: how long a migration whose connections were lost during pre-copy waits for its source to come back before it is discarded and the process exits 1 (like 500ms, 5s, 2m; 0: discard at once; default 30s).",
            valueName: "duration"),
        transform: { try DurationOption.parse($0) })
    var resumeTimeout: DurationOption?

    @Flag(
        help:
            "Start the process in a session of its own (log in STATE_DIR/GUEST_ID.log), print its ready line, and return."
    )
    var detach = false

    @Flag(name: .shortAndLong, help: "Log what happens at info level on stderr.")
    var verbose = false

    func validate() throws {
        guard [spec, incoming, restore].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --spec FILE, --incoming HOST:PORT and --restore FILE")
        }
        do { _ = try GuestID(id) } catch { throw ValidationError("--id \(id): \(error.message)") }
        if let incoming {
            try usageCheck("--incoming", incoming) { _ = try Endpoint.parse($0, defaultHost: "127.0.0.1") }
        }
        if let name {
            do { _ = try GuestName(name) } catch { throw ValidationError("--name \(name): \(error.message)") }
        }
        if keyFile != nil && incoming == nil { throw ValidationError("--key-file goes with --incoming") }
        if paused && incoming == nil { throw ValidationError("--paused goes with --incoming") }
        if resumeTimeout != nil && incoming == nil { throw ValidationError("--resume-timeout goes with --incoming") }
    }

    func run() throws {
        do { try serve() } catch let error as CommandError {
            Terminal.note(error.description)
            Glibc.exit(error.exitCode)
        }
    }

    private func serve() throws {
        signal(SIGHUP, SIG_IGN)  // a closing terminal does not end the guest
        signal(SIGPIPE, SIG_IGN)  // a client that went away is an error on its write, not a death
        var configuration = VMMConfiguration(start: try start(), id: try GuestID(id), stateDirectory: stateDir)
        configuration.startPaused = paused
        if let resumeTimeout { configuration.incomingResumeTimeout = resumeTimeout.duration }
        if detach { return try VMMDetach.launch(configuration, arguments: Array(CommandLine.arguments.dropFirst())) }
        LoggingBootstrap.once(level: verbose ? .info : .warning)
        let terminations = Self.blockTermination()
        let monitor = VirtualMachineMonitor(configuration: configuration, logger: Logger(label: "ferry.vmm"))
        let ready: VMMReady
        do { ready = try monitor.prepare() } catch { throw Self.commandError(error) }
        HumanOutput.print(Self.readyLine(id: id, pid: getpid(), ready.socketPath, incoming: ready.incoming))
        Self.handleTermination(terminations, monitor)
        Glibc.exit(monitor.run())
    }

    /// Blocks SIGTERM and SIGINT on this thread before any other starts (threads inherit the
    /// mask), so that only `handleTermination`'s thread takes them, with `sigwait`.
    static func blockTermination() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        return set
    }

    /// SIGTERM or SIGINT: the graceful end `VirtualMachineMonitor.terminate` chooses for the
    /// guest's state (a `shutdown` with its default timeout while it runs).
    static func handleTermination(_ set: sigset_t, _ monitor: VirtualMachineMonitor) {
        let thread = Thread {
            var signals = set
            while true {
                var signal: Int32 = 0
                guard sigwait(&signals, &signal) == 0 else { continue }
                monitor.terminate(signal: signal == SIGINT ? "SIGINT" : "SIGTERM")
            }
        }
        thread.name = "ferry-vmm-signals"
        thread.start()
    }

    private func start() throws -> VMMConfiguration.Start {
        if let spec {
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: spec))
                return .boot(try JSONDecoder().decode(GuestSpecification.self, from: data))
            } catch {
                throw CommandError.configuration(
                    "--spec \(spec): not a guest specification (\(error)); see docs/vmm-control.md")
            }
        }
        if let restore { return .restore(restore) }
        return .incoming(
            try Endpoint.parse(incoming ?? "", defaultHost: "127.0.0.1"), keyFile: keyFile,
            name: try name.map { try GuestName($0) })
    }

    static func readyLine(id: String, pid: pid_t, _ socket: String, incoming: String?) -> String {
        "ready guest=\(id) pid=\(pid) socket=\(socket)" + (incoming.map { " incoming=\($0)" } ?? "")
    }

    static func commandError(_ error: VMMError) -> CommandError {
        switch error.code {
        case .system: CommandError.system(error.message)
        default: CommandError.configuration(error.message)
        }
    }
}

/// `ferry vmm --detach`: starts the same command without `--detach` through `VMMSpawn` and waits
/// until its control socket answers `hello`.
enum VMMDetach {
    static func launch(_ configuration: VMMConfiguration, arguments: [String]) throws {
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        let pid: pid_t
        do {
            pid = try DetachedProcess.spawn(
                executable: executable, arguments: arguments.filter { $0 != "--detach" },
                logPath: configuration.logPath)
        } catch { throw CommandError.system("\(error)") }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let code = DetachedProcess.reap(pid) {
                throw CommandError.configuration(
                    "the ferry vmm process exited with \(code) before it was ready; see \(configuration.logPath)")
            }
            if let hello = try? VMMControlClient(path: configuration.socketPath, timeoutSeconds: 5).call("hello"),
                hello["pid"]?.intValue == Int(pid)
            {
                HumanOutput.print(
                    VMMCommand.readyLine(
                        id: configuration.id.hex, pid: pid, configuration.socketPath,
                        incoming: hello["incoming"]?.stringValue))
                return
            }
            usleep(20_000)
        }
        throw CommandError.configuration(
            "the ferry vmm process \(pid) did not answer on \(configuration.socketPath) within 30 s; see \(configuration.logPath)"
        )
    }
}
