import FerryCodec
import FerryGuest
import FerryGuestMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryMigration

/// Issue 13: a trace workload longer than a frame (16 MiB) migrates. It travels after
/// GUEST_CONFIG in GUEST_ATTACHMENT chunks of 1 MiB (Protocol.md 3.25), is written beside the
/// destination's image and replayed from there.
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct LargeTraceMigrationTests {
    /// Writes a trace of at least `bytes` bytes (lines of 20 pages among `pageCount`, 1 ms apart)
    /// in 1 MiB blocks, and returns its length.
    static func writeTrace(to path: String, bytes: Int, pageCount: Int) throws -> Int {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var written = 0
        var line = 0
        var block: [UInt8] = []
        while written < bytes {
            block.removeAll(keepingCapacity: true)
            while block.count < 1 << 20 {
                let pages = (0..<20).map { String(($0 * 97 + line * 13) % pageCount) }
                block += Array("\(line + 1) \(pages.joined(separator: " "))\n".utf8)
                line += 1
            }
            try handle.write(contentsOf: block)
            written += block.count
        }
        return written
    }

    /// A 24 MiB trace migrates: the destination verifies it, keeps it as `PATH.attachment`
    /// (byte for byte the source's file), and the guest continues from it exactly: the image
    /// equals a reference run to the destination's vCPU steps. (That neither side holds the trace
    /// in memory is measured on two processes, in TraceCLITests: this process runs other tests.)
    @Test func traceOver16MiBMigratesTransparently() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        let trace = scratch.file("big.trace")
        let length = try Self.writeTrace(to: trace, bytes: 24 << 20, pageCount: migration.size / systemPageSize)
        #expect(length > 16 << 20)
        migration.tracePath = trace
        migration.runFor = 0.3

        let outcome = try migration.run(in: scratch)

        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(report.verified && destination.report.verified)
        #expect(report.guestLocation == .destination)
        #expect(outcome.setup.attachment?.length == UInt64(length))
        #expect(try Transparency.difference(between: scratch.file("destination.img.attachment"), and: trace) == nil)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial.attachment")))
        #expect(destination.finalStates.map(\.step).reduce(0, +) > 0, "the guest replayed the trace there")
        try Transparency.runReference(
            imagePath: scratch.file("reference.img"), setup: outcome.setup,
            steps: destination.finalStates.map(\.step), logger: testLogger)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("reference.img"))
                == nil)
        #expect(FrameType.guestAttachment.maxPayload == (1 << 20) + 8)
    }

    /// A chunk damaged on the wire (one byte flipped in the second GUEST_ATTACHMENT) fails the
    /// hash check: the destination refuses it naming the damage and removes what it received,
    /// and the guest keeps running on the source.
    @Test func damagedChunkIsRefusedAndTheGuestStaysOnTheSource() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        let trace = scratch.file("big.trace")
        _ = try Self.writeTrace(to: trace, bytes: 17 << 20, pageCount: migration.size / systemPageSize)
        migration.tracePath = trace
        let seen = Atomic<Int>(0)
        let relay = Box<Relay>()
        migration.route = { port in
            let made = try Relay(to: port, options: .halfClose) { frame in
                guard frame.direction == .toDestination, frame.type == FrameType.guestAttachment.rawValue else {
                    return .forward
                }
                return seen.add(1, ordering: .relaxed).newValue == 2 ? .corrupt(.payloadByte(100)) : .forward
            }
            relay.value = made
            return made.port
        }
        let outcome = try migration.run(in: scratch)
        relay.value?.stop()

        let sourceError = try #require(throws: MigrationError.self) { try outcome.source.get() }
        #expect(sourceError.guest == .source, "\(sourceError)")
        #expect(sourceError.message.contains("damaged in transit"), "\(sourceError)")
        #expect(outcome.guestWasRunningAfterFailure)
        let destinationError = try #require(throws: MigrationError.self) { try outcome.destination.get() }
        #expect(destinationError.code == .verification, "\(destinationError)")
        #expect(destinationError.message.contains("GUEST_ATTACHMENT"), "\(destinationError)")
        for leftover in ["destination.img", "destination.img.partial", "destination.img.partial.attachment"] {
            #expect(!FileManager.default.fileExists(atPath: scratch.file(leftover)), "\(leftover) was left behind")
        }
    }

    /// A migrating guest's trace over 16 MiB is no longer refused: its setup measures it (the
    /// length and XXH3-64 GUEST_CONFIG announces) without reading it into memory.
    @Test func setupMeasuresALongTrace() throws {
        let scratch = Scratch()
        let trace = scratch.file("big.trace")
        let length = try Self.writeTrace(to: trace, bytes: 17 << 20, pageCount: 4096)
        let setup = try GuestSetup.make(
            workload: "trace:" + trace, vcpus: 1, seed: 1, pageSize: 4096, pageCount: 4096)
        let attachment = try #require(setup.attachment)
        #expect(attachment.length == UInt64(length))
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: trace)))
        #expect(attachment.hash == bytes.withUnsafeBytes { PageHash.hash($0) })
        #expect(setup.description.attachment == attachment)
    }
}
