import CounterGuest
import FerryMigration
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Logging
import Testing

// Migrates the counter guest over loopback through the public API only, as a VMM would:
// a DestinationAgent that knows the counter guest kind, a SourceAgent given the source adapter.

let logger: Logger = {
    var logger = Logger(label: "counter-guest.test")
    logger.logLevel = .warning
    return logger
}()

/// One migration to a destination agent on 127.0.0.1 in a thread of this process.
struct CounterMigration {
    /// Seconds the guest runs on the destination; 0: it is held exactly as handed over.
    var runFor: Duration = .zero
    var tracker = TrackerChoice.auto
    var kinds = GuestKindRegistry([CounterGuestKind()])
    /// How long the destination waits for a source to establish a migration.
    var acceptTimeout: Duration = .seconds(20)
    let directory = "/dev/shm/ferry-counter-\(getpid())-\(UUID().uuidString)"
    var imagePath: String { directory + "/counter.img" }

    struct Outcome {
        var source: CounterMigratableGuest
        var report: Result<MigrationReport, any Error>
        var destination: Result<DestinationResult, any Error>
    }

    func run() throws -> Outcome {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let destination = DestinationAgent(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: imagePath, runFor: runFor,
                acceptTimeout: acceptTimeout, receiveTimeout: .seconds(20), guestKinds: kinds), logger: logger)
        let port = try destination.bind()
        let receiving = BackgroundThread { try destination.run() }

        let guest = try CounterMigratableGuest(vcpus: 2, seed: 7)
        guest.machine.start()
        MonotonicClock.sleep(seconds: 0.2)  // let it dirty some memory first
        let options = SourceOptions(
            destination: Endpoint(host: "127.0.0.1", port: port),
            settings: ConvergenceSettings(downtimeTarget: .milliseconds(200), maxRounds: 30, timeout: .seconds(60)),
            tracker: tracker, replyTimeout: .seconds(20))
        let report = Result { try SourceAgent(guest: guest, options: options, logger: logger).migrate() }
        return Outcome(source: guest, report: report, destination: receiving.result())
    }

    func removeFiles() { try? FileManager.default.removeItem(atPath: directory) }
}

/// The destination's image file: the regions back to back, RAM's pages first.
func assertImage(at path: String, equals guest: CounterMigratableGuest) throws {
    let image = try MappedRegion.mapFile(path: path, writable: false)
    #expect(image.size == guest.ram.size + guest.vram.size)
    #expect(memcmp(image.base, guest.ram.base, guest.ram.size) == 0, "RAM differs")
    #expect(memcmp(image.base + guest.ram.size, guest.vram.base, guest.vram.size) == 0, "video memory differs")
}

/// Each vCPU ticks the device every `tickEvery` steps, so the device's tick count always equals
/// the vCPUs' ticks: registers and device state that migrated together stay consistent.
func ticksMatchCounters(_ state: CounterMachineState) -> Bool {
    state.device.ticks == state.vcpus.reduce(0) { $0 + $1.counter / CounterMachine.tickEvery }
}

@Suite(.serialized) struct CounterGuestMigrationTests {
    /// Held at the handover (`runFor` 0): both regions arrive byte for byte, and the device
    /// state the destination loaded is the state the source stopped with. With either write
    /// tracker (`auto` is userfaultfd where the kernel has it).
    @Test(arguments: [TrackerChoice.auto, .mprotect])
    func bothRegionsAndTheDeviceArriveExactly(tracker: TrackerChoice) throws {
        var migration = CounterMigration()
        migration.tracker = tracker
        defer { migration.removeFiles() }
        let outcome = try migration.run()
        let report = try outcome.report.get()
        let destination = try outcome.destination.get()
        let handedOver = outcome.source.machine.snapshot  // stopped by stopForHandover()

        #expect(report.verified && destination.report.verified)
        #expect(report.outcome == .succeeded && report.guestLocation == .destination)
        #expect(report.pagesTotal == ((16 << 20) + (1 << 20)) / systemPageSize)
        #expect(report.vcpuSteps == handedOver.vcpus.map(\.counter))
        #expect(handedOver.vcpus.allSatisfy { $0.counter > 0 } && handedOver.device.ticks > 0, "the guest ran")

        let incoming = try #require(destination.guest as? CounterIncomingGuest)
        #expect(incoming.loaded == handedOver)
        #expect(incoming.final == handedOver, "held: no vCPU stepped on the destination")
        #expect(ticksMatchCounters(handedOver))
        try assertImage(at: migration.imagePath, equals: outcome.source)
        print(
            "counter guest migrated: \(report.rounds) rounds, downtime \(report.downtimeMs) ms, \(report.pagesTotal) pages, "
                + "tracker \(report.trackerReason ?? "-"), vCPU steps \(report.vcpuSteps), device ticks \(handedOver.device.ticks)"
        )
    }

    /// Run on (`runFor` 0.3 s): each vCPU's counter and the device's tick count continue from
    /// where they stopped on the source, and the device keeps writing into the received video
    /// memory at the scanline it had reached.
    @Test func theGuestContinuesOnTheDestination() throws {
        var migration = CounterMigration()
        migration.runFor = .milliseconds(300)
        defer { migration.removeFiles() }
        let outcome = try migration.run()
        let report = try outcome.report.get()
        let destination = try outcome.destination.get()
        let handedOver = outcome.source.machine.snapshot
        #expect(report.verified)

        let incoming = try #require(destination.guest as? CounterIncomingGuest)
        let final = try #require(incoming.final)
        #expect(incoming.loaded == handedOver)
        for (before, after) in zip(handedOver.vcpus, final.vcpus) {
            #expect(after.counter > before.counter, "the counter continues: \(before.counter) → \(after.counter)")
        }
        #expect(final.device.ticks > handedOver.device.ticks)
        #expect(ticksMatchCounters(final))
        #expect(destination.outcome.vcpuSteps == final.vcpus.map(\.counter))

        let image = try MappedRegion.mapFile(path: migration.imagePath, writable: false)
        let vram = image.base + outcome.source.ram.size
        let lastWord = Int(
            (final.device.scanline + UInt64(outcome.source.vram.size / 8) - 1) % UInt64(outcome.source.vram.size / 8))
        #expect(vram.load(fromByteOffset: lastWord * 8, as: UInt64.self) == final.device.ticks)
    }

    /// A destination that does not know guest kind 0x100 refuses it in its answer to `HELLO`;
    /// the guest keeps running on the source.
    @Test func aDestinationWithoutTheKindRefusesIt() throws {
        var migration = CounterMigration()
        migration.kinds = GuestKindRegistry()
        migration.acceptTimeout = .seconds(2)  // it keeps listening after a refusal, until then
        defer { migration.removeFiles() }
        let outcome = try migration.run()
        defer { outcome.source.machine.stop() }
        guard case .failure(let failure) = outcome.report else {
            Issue.record("the migration succeeded")
            return
        }
        let error = try #require(failure as? MigrationError)
        #expect(error.code == .refused && error.guest == .source, "\(error)")
        let before = outcome.source.machine.snapshot.vcpus[0].counter
        let start = MonotonicClock.now()
        while outcome.source.machine.snapshot.vcpus[0].counter == before && MonotonicClock.seconds(since: start) < 5 {
            MonotonicClock.sleep(seconds: 0.01)
        }
        #expect(outcome.source.machine.snapshot.vcpus[0].counter > before, "still running on the source")
    }

    /// The sections round-trip; a device section of a version this build does not read, or of
    /// an unknown mandatory kind, is refused; an unknown optional one is ignored.
    @Test func deviceStateSections() throws {
        let state = CounterMachineState(
            vcpus: [CounterRegisters(counter: 5, prng: 9), CounterRegisters(counter: 70, prng: 3)],
            device: CounterDevice(ticks: 1, scanline: 1))
        var sections = CounterGuestFormat.sections(of: state)
        #expect(sections.map(\.kind) == [1, 1, 0x100])
        #expect(try CounterGuestFormat.state(from: sections) == state)

        let optional = DeviceStateSection(kind: 0x8123, version: 1, instance: 0, body: [1, 2, 3])
        #expect(try CounterGuestFormat.state(from: sections + [optional]) == state)
        let mandatory = DeviceStateSection(kind: 0x123, version: 1, instance: 0, body: [])
        #expect(throws: CounterGuestError.self) { try CounterGuestFormat.state(from: sections + [mandatory]) }
        sections[2].version = 2
        #expect(throws: CounterGuestError.self) { try CounterGuestFormat.state(from: sections) }
    }
}
