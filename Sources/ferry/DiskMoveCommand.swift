import ArgumentParser
import FerryDiskMove
import FerryGuest
import FerryMigration
import FerrySystem
import FerryTransport
import Foundation
import Logging

/// `ferry disk send`: moves one disk file to a `ferry disk receive` (Protocol.md section 10).
struct DiskSendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Move a disk file to a ferry disk receive: only its allocated extents, verified (docs/disk-move.md).",
        discussion: """
            Maps the file's data extents (SEEK_DATA/SEEK_HOLE) and sends only the 64 KiB blocks that hold data: \
            zero blocks as markers, LZ4 where it makes a block smaller, every block hashed (XXH3) and a digest over \
            the whole disk checked by the destination before it renames its copy into place. The file must not \
            change during the move (stop the guest first). A connection lost while blocks flow is opened again \
            (up to 5 attempts) and the move continues after the blocks the destination holds verified. Prints a report (disk size, allocated bytes, wire bytes, \
            time, MB/s). Exit codes: 0 the destination holds a verified copy; 3 refused (no room, the file exists \
            there, another key); 5 connection failed; 6 a block or the digest did not verify; 7 protocol error; \
            8 a system call failed; 9 bad configuration; 10 the destination aborted; 130/143 cancelled by SIGINT/SIGTERM.
            """)

    @Option(help: ArgumentHelp("The disk file to send (read only).", valueName: "path"))
    var disk: String

    @Option(
        help: ArgumentHelp(
            "The destination (its ferry disk receive --listen); a port alone means 127.0.0.1.", valueName: "host:port"),
        transform: { try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) })
    var to: Endpoint

    @Option(
        help:
            "Connections that carry blocks (1-16), each with its own thread reading and compressing a stripe of the disk. A lost connection on any of them pauses the move and every stream resumes (with a version-1 destination: the move ends).",
        transform: NumberOption.count(1...16))
    var streams = 1

    @Option(
        name: .customLong("max-bandwidth"),
        help:
            "Most the block streams together may put on the wire, in bytes or bits per second: 100MB/s, 1GB/s, 800Mbit/s (default: no limit).",
        transform: RateOption.bandwidth)
    var maxBandwidth: Rate?

    @OptionGroup(title: "Security") var security: SecurityOptions

    @OptionGroup(title: "Output") var output: OutputOptions

    func run() throws {
        let logger = output.makeLogger("ferry.disk.send")
        let display = DiskProgressDisplay(role: "send", quiet: output.quiet)
        var report = DiskMoveReport()
        runReportingErrors {
            do {
                var options = DiskSendOptions(
                    path: disk, destination: to, security: try security.make(), sourceName: hostName())
                options.streams = streams
                options.maxBandwidthBytesPerSecond = maxBandwidth?.bytesPerSecond(pageSize: systemPageSize)
                options.cancellation = DiskMoveSignals.cancellation(
                    announce: "cancelling the disk move: the destination is told to remove its partial copy")
                report = try DiskSender(options: options, logger: logger, progress: display.handler).run()
                display.finish()
                DiskMoveText.print(report, role: .source, path: disk, json: output.jsonTarget)
                try DiskMoveJSON.write(report, role: .source, path: disk, error: nil, to: output.jsonTarget)
            } catch {
                display.finish()
                try? DiskMoveJSON.write(report, role: .source, path: disk, error: error, to: output.jsonTarget)
                throw error
            }
        }
    }
}

/// `ferry disk receive`: takes one disk from a `ferry disk send`.
struct DiskReceiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receive",
        abstract: "Take one disk file from a ferry disk send, verify it and put it in place (docs/disk-move.md).",
        discussion: """
            Prints "listening on HOST:PORT" on stderr when ready (port 0: any free port). Checks before any block \
            is sent that the disk's allocated bytes fit in the free space (statvfs) and refuses naming both numbers. \
            Writes PATH.partial, holes kept as holes, and renames it to PATH only when every block and the digest \
            verified; on any failure PATH.partial is removed and PATH is left as it was (a lost connection first \
            waits --resume-timeout for the source to continue). With --update (PATH holds an older copy) or \
            --base FILE, PATH.partial starts as a copy of the older one (reflink where the file system can, else \
            its data extents) and only the blocks whose hashes differ cross the wire; the digest is checked over \
            the whole result. A connection that does not \
            offer a disk (another key, another program) is closed and the listener waits on. Exit codes as ferry \
            disk send's; 5 also when no source came within --accept-timeout.
            """)

    @Option(
        help: ArgumentHelp(
            "Address to listen on: 0.0.0.0:PORT for every interface; a port alone means 127.0.0.1; port 0 picks a free one.",
            valueName: "host:port"),
        transform: { try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) })
    var listen: Endpoint

    @Option(help: ArgumentHelp("Where the disk goes (written as PATH.partial until verified).", valueName: "path"))
    var disk: String

    @Flag(help: "Replace an existing file at --disk (only once the new copy verified).")
    var force = false

    @Flag(
        help:
            "--disk holds an older copy of this disk (a migration back): start from it and receive only the blocks that differ, then replace it once the new copy verified. Without a file at --disk, a full move."
    )
    var update = false

    @Option(
        help: ArgumentHelp(
            "An older copy of this disk elsewhere on this host: start from it (it is only read) and receive only the blocks that differ.",
            valueName: "path"))
    var base: String?

    @Option(
        name: .customLong("accept-timeout"),
        help: "Give up if no source offers a disk within this time (default: wait forever; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var acceptTimeout: DurationOption?

    @Option(
        name: .customLong("resume-timeout"),
        help:
            "When the source's connection is lost while blocks flow, keep PATH.partial and what verified this long for the source to reconnect and continue (at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var resumeTimeout = DurationOption(seconds: 30)

    @OptionGroup(title: "Security") var security: ReceiveSecurityOptions

    @OptionGroup(title: "Output") var output: OutputOptions

    func validate() throws {
        if security.requireEncryption && security.keyFile == nil {
            throw ValidationError("--require-encryption needs --key-file")
        }
        if update && base != nil {
            throw ValidationError("--update starts from --disk itself; drop --base or --update")
        }
        if let base, !FileManager.default.fileExists(atPath: base) {
            throw ValidationError("--base \(base) does not exist: give the path of the older copy, or drop --base")
        }
        let directory = URL(fileURLWithPath: disk).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) || !isDirectory.boolValue {
            throw ValidationError("--disk \(disk): directory \(directory) does not exist; create it first")
        }
    }

    func run() throws {
        let logger = output.makeLogger("ferry.disk.receive")
        let display = DiskProgressDisplay(role: "receive", quiet: output.quiet)
        var report = DiskMoveReport()
        runReportingErrors {
            do {
                let connectionSecurity = try SecurityOptions.make(
                    keyFile: security.keyFile, encrypt: security.requireEncryption, cipher: "auto",
                    encryptFlag: "--require-encryption")
                let listener = try TCPListener(listen)
                Terminal.note("listening on \(listen.host):\(listener.port), disk \(disk)")
                var options = DiskReceiveOptions(
                    path: disk, security: connectionSecurity, overwrite: force,
                    acceptTimeoutMs: acceptTimeout?.milliseconds,
                    destinationName: hostName())
                options.resumeWindowMs = resumeTimeout.milliseconds
                options.base = update ? disk : base
                options.cancellation = DiskMoveSignals.cancellation(
                    announce: "cancelling: PATH.partial is removed and the source told; PATH is left as it was")
                report = try DiskReceiver(
                    listener: listener, options: options, logger: logger, progress: display.handler
                )
                .run()
                display.finish()
                DiskMoveText.print(report, role: .destination, path: disk, json: output.jsonTarget)
                try DiskMoveJSON.write(report, role: .destination, path: disk, error: nil, to: output.jsonTarget)
            } catch {
                display.finish()
                try? DiskMoveJSON.write(report, role: .destination, path: disk, error: error, to: output.jsonTarget)
                throw error
            }
        }
    }
}

/// SIGINT and SIGTERM cancel a disk move: `OperatorSignals` handles the signals (exit 130/143),
/// and a thread passes its cancel on to the move.
enum DiskMoveSignals {
    static func cancellation(announce: String) -> DiskMoveCancellation {
        let signals = MigrationCancellation()
        OperatorSignals.install(signals) { "\($0): \(announce)" }
        let move = DiskMoveCancellation()
        let thread = Thread {
            while signals.sleep(seconds: 3600) {}
            move.cancel(signals.reason ?? "cancelled")
        }
        thread.name = "ferry-disk-cancel"
        thread.start()
        return move
    }
}
