import FerryCodec
import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Logging
import Synchronization

@testable import FerryMigration

let testLogger: Logger = {
    var logger = Logger(label: "ferry.test")
    logger.logLevel = .warning
    return logger
}()

/// One live migration on loopback with a real source guest, destination agent and TCP.
struct LoopbackMigration {
    var size = 32 << 20
    var workload = "idle"
    var vcpus = 2
    var tracker: TrackerChoice = .auto
    var compression: CompressionChoice = .auto
    var settings = ConvergenceSettings(downtimeTarget: .seconds(0.050), maxRounds: 30, timeout: .seconds(60))
    var runBefore = 0.1
    var runFor = 0.1
    var traceText: String?
    /// A trace file written beforehand (replayed with `trace:PATH`); wins over `traceText`.
    var tracePath: String?
    var maxBandwidth: Double?
    /// Bytes at the end of the images left as one file hole (never written).
    var holeTail = 0
    var protectDuringRoundZero = true
    var mix: ImageMix = .standard
    /// Maps the destination's port to the port the source connects to (a relay); nil: direct.
    var route: ((UInt16) throws -> UInt16)?
    /// Changes the source's options before it starts.
    var adjustSource: ((inout SourceOptions) -> Void)?
    /// Changes the destination's options before it listens.
    var adjustDestination: ((inout DestinationOptions) -> Void)?
    var destinationResumeTimeout = 30.0
    var sourceHandoffTimeoutMs = 60_000
    var destinationHandoffTimeoutMs = DestinationOptions.defaultHandoffTimeout.inMilliseconds
    /// Runs after the source's `migrate()` returned or failed, before waiting for the destination;
    /// gets the destination's own port (not the relay's).
    var afterSource: ((UInt16) throws -> Void)?
    /// Sees the source's result as soon as `migrate()` returned or failed (before `afterSource`).
    var afterSourceResult: ((Result<MigrationReport, any Error>) -> Void)?
    var acceptTimeoutMs = 20_000
    var sourceSecurity = ConnectionSecurity.none
    var destinationSecurity = ConnectionSecurity.none
    /// Runs with the destination's port once it listens, before the source connects.
    var beforeSource: ((UInt16) throws -> Void)?
    /// Wraps the source's guest as the source agent sees it (e.g. to watch its pauses).
    var wrapGuest: ((BuiltinMigratableGuest) -> any MigratableGuest)?
    /// The progress handlers of the two sides.
    var sourceProgress: ProgressHandler?
    var destinationProgress: ProgressHandler?
    /// The destination's cancellation (an operator's signal), if any.
    var destinationCancellation: MigrationCancellation?
    /// A disk (`disk.img` in the scratch directory, both ends' storage) written at this many
    /// records per second by the source guest; nil: no disk.
    var diskRecordsPerSecond: Double?

    struct Outcome {
        var source: Result<MigrationReport, any Error>
        var destination: Result<DestinationResult, any Error>
        /// Steps per vCPU of the source guest when migrate() returned or failed.
        var sourceStepsAtEnd: [UInt64]
        var guestWasRunningAfterFailure: Bool
        var setup: GuestSetup
        /// The agents' `lastReport`s: as far as each side got, also after a failure.
        var sourceReport: MigrationReport? = nil
        var destinationReport: MigrationReport? = nil
    }

    /// Generates `source.img` and `reference.img` (identical) in `scratch` and migrates
    /// `source.img` to `destination.img`.
    func run(in scratch: Scratch, prepareDestination: ((String) throws -> Void)? = nil) throws -> Outcome {
        let pageSize = systemPageSize
        for name in ["source.img", "reference.img"] {
            try ImageGenerator.create(
                path: scratch.file(name), size: size - holeTail, mix: mix, seed: 3, pageSize: pageSize, overwrite: true)
            if holeTail > 0 { _ = truncate(scratch.file(name), off_t(size)) }  // a hole at the end
        }
        var workloadText = workload
        if let traceText {
            try traceText.write(toFile: scratch.file("trace.txt"), atomically: true, encoding: .utf8)
            workloadText = "trace:" + scratch.file("trace.txt")
        }
        if let tracePath { workloadText = "trace:" + tracePath }
        var destinationOptions = DestinationOptions(
            listen: try Endpoint.parse("127.0.0.1:0"), imagePath: scratch.file("destination.img"),
            runFor: .seconds(runFor), acceptTimeout: .milliseconds(acceptTimeoutMs),
            receiveTimeout: .milliseconds(20_000),
            resumeTimeout: .seconds(destinationResumeTimeout))
        destinationOptions.handoffTimeout = .milliseconds(destinationHandoffTimeoutMs)
        destinationOptions.security = destinationSecurity
        destinationOptions.cancellation = destinationCancellation
        adjustDestination?(&destinationOptions)
        let destination = DestinationAgent(
            options: destinationOptions, logger: testLogger, progress: destinationProgress)
        let port = try destination.bind()
        try prepareDestination?(scratch.file("destination.img"))
        let destinationRun = BackgroundThread { try destination.run() }
        try beforeSource?(port)

        let region = try MappedRegion.mapFile(path: scratch.file("source.img"), writable: true)
        let setup = try GuestSetup.make(
            workload: workloadText, vcpus: vcpus, seed: 11, pageSize: pageSize, pageCount: size / pageSize)
        let guest = try Guest(memory: region.base, size: size, configuration: setup.configuration, logger: testLogger)
        var disk: DiskWriter?
        if let diskRecordsPerSecond {
            try DiskJournal.createDisk(path: scratch.file("disk.img"), bytes: 16 << 20)
            let journal = try DiskJournal.boot(path: scratch.file("disk.img"), seed: 5)
            disk = try guest.diskWriter(journal: journal, recordsPerSecond: diskRecordsPerSecond, logger: testLogger)
        }
        guest.start()
        disk?.start()
        Thread.sleep(forTimeInterval: runBefore)
        var options = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(try route?(port) ?? port)"), settings: settings,
            compression: compression, tracker: tracker, replyTimeout: .milliseconds(20_000),
            maxBandwidth: maxBandwidth, protectDuringRoundZero: protectDuringRoundZero)
        options.handoffTimeout = .milliseconds(sourceHandoffTimeoutMs)
        options.security = sourceSecurity
        adjustSource?(&options)
        let builtin = BuiltinMigratableGuest(guest, setup: setup, memory: region.base, disk: disk)
        let agent = SourceAgent(
            guest: wrapGuest?(builtin) ?? builtin, imagePath: scratch.file("source.img"),
            options: options, logger: testLogger, progress: sourceProgress)
        let source = Result { try agent.migrate() }
        afterSourceResult?(source)
        var runningAfterFailure = false
        var steps: [UInt64]
        if case .failure = source {
            let before = guest.totalSteps
            Thread.sleep(forTimeInterval: 0.1)
            runningAfterFailure = guest.totalSteps > before
            disk?.pause()
            steps = guest.stop().map(\.step)
            _ = try? disk?.shutdown()
        } else {
            steps = guest.stepsPerVCPU
        }
        try region.sync()
        try afterSource?(port)
        let destinationResult = destinationRun.result()
        return Outcome(
            source: source, destination: destinationResult, sourceStepsAtEnd: steps,
            guestWasRunningAfterFailure: runningAfterFailure, setup: setup, sourceReport: agent.lastReport,
            destinationReport: destination.lastReport)
    }
}

typealias FerryCodecMode = FerryCodec.CompressionMode

extension LoopbackMigration {
    /// Routes the migration through a frame `Relay` (half-close) that cuts the first frame of
    /// `type` going `direction`. The relay is in the returned box once the destination listens;
    /// stop it after `run`.
    mutating func cutFirst(_ type: FrameType, going direction: Relay.Direction) -> Box<Relay> {
        let relay = Box<Relay>()
        route = { port in
            let made = try Relay(to: port, options: .halfClose, onFrame: Relay.cutFirst(type, going: direction))
            relay.value = made
            return made.port
        }
        return relay
    }
}

extension Relay {
    /// A frame verdict that cuts the first frame of `type` going `direction` and forwards all else.
    static func cutFirst(_ type: FrameType, going direction: Direction) -> @Sendable (inout Frame) -> Verdict {
        cutFirst(type.rawValue, going: direction)
    }
}

extension Relay {
    /// A half-close frame relay in the shape the tests here use: `decide` sees each frame's
    /// direction and type; a frame it forwards is then shown to `rewrite`, which may change it.
    static func frames(
        to port: UInt16, rewrite: @escaping @Sendable (inout Frame) -> Void,
        decide: @escaping @Sendable (Direction, UInt16) -> Verdict
    ) throws -> Relay {
        try Relay(to: port, options: .halfClose) { frame in
            let verdict = decide(frame.direction, frame.type)
            if verdict == .forward { rewrite(&frame) }
            return verdict
        }
    }
}
