import FerryGuest
import FerryGuestMigration
import FerryMigration
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Logging
import Testing

/// Issue 11, finding 6: `ferry receive --serve` kept every finished migration's control
/// connection (one descriptor each, its buffers grown to the largest frame, here a multi-MB
/// GUEST_CONFIG) in its handoff history, and every outcome (with the guest's setup, a trace
/// included) in a list that only grew. The real agent runs as a child process and receives 1,000
/// sequential migrations of a tiny guest, every 100th with a 6 MB trace in its GUEST_CONFIG; its
/// descriptors and resident memory after the first 100 and after all 1,000 must match: fds within
/// ±4, RSS grown by less than 16 MiB. About 25–40 s in a debug build on two shared cores.
@Suite(.serialized, .tags(.slow), .skippable(.slow), .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ServeLeakTests {
    static let migrations = Int(ProcessInfo.processInfo.environment["FERRY_LEAK_MIGRATIONS"] ?? "") ?? 1_000
    static let fdSlack = 4
    static let rssBoundKiB = 16 << 10

    static func openDescriptors(_ pid: pid_t) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    static func residentKiB(_ pid: pid_t) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return -1 }
        return Int(line.split(separator: " ")[1]) ?? -1
    }

    @Test(.timeLimit(.minutes(3)))
    func thousandMigrationsLeaveDescriptorsAndMemoryFlat() throws {
        let scratch = Scratch("serve-leak")
        let guests = scratch.file("guests")
        try FileManager.default.createDirectory(atPath: guests, withIntermediateDirectories: true)
        let size = 64 << 10
        let image = scratch.file("source.img")
        try ImageGenerator.create(
            path: image, size: size, mix: .standard, seed: 9, pageSize: systemPageSize, overwrite: true)
        // A trace of ~6 MB (comments, and one write), so GUEST_CONFIG is that large.
        let comment = "# " + String(repeating: "x", count: 1022) + "\n"
        let trace = scratch.file("big.trace")
        try (String(repeating: comment, count: 6 << 10) + "5 1\n").write(
            toFile: trace, atomically: false, encoding: .utf8)

        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--serve", guests, "--max-sessions", "4", "-q",
        ])
        defer {
            kill(receiver.process.processIdentifier, SIGKILL)
            _ = receiver.wait(timeout: 10)
        }
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let afterHost = try #require(listening.range(of: "127.0.0.1:")).upperBound
        let port = try #require(UInt16(listening[afterHost...].prefix { $0.isNumber }))
        let pid = receiver.process.processIdentifier

        var logger = Logger(label: "ferry.test.leak")
        logger.logLevel = .critical
        let region = try MappedRegion.mapFile(path: image, writable: true)
        let endpoint = Endpoint(host: "127.0.0.1", port: port)
        var baseline: (fds: Int, rssKiB: Int)?
        let start = Date()
        for index in 0..<Self.migrations {
            let name = "g\(index)"
            let workload = index % 100 == 50 ? "trace:" + trace : "idle"
            let setup = try GuestSetup.make(
                workload: workload, vcpus: 1, seed: 1, pageSize: systemPageSize, pageCount: size / systemPageSize)
            let guest = try Guest(memory: region.base, size: size, configuration: setup.configuration, logger: logger)
            guest.start()
            var options = SourceOptions(
                destination: endpoint,
                settings: ConvergenceSettings(downtimeTarget: .seconds(0.05), maxRounds: 30, timeout: .seconds(30)),
                guestName: name, replyTimeout: .milliseconds(20_000), streams: 1)
            options.handoffTimeout = .milliseconds(20_000)
            let agent = SourceAgent(
                memory: region.base, size: size, imagePath: image, guest: guest, guestSetup: setup,
                options: options, logger: logger)
            do {
                let report = try agent.migrate()
                try #require(report.guestLocation == .destination, "migration \(index): \(report.outcome)")
            } catch {
                _ = guest.stop()
                Issue.record("migration \(index) failed: \(error)")
                return
            }
            // Keep /dev/shm small: the destination no longer needs the image once its guest stopped.
            if index > 0 { try? FileManager.default.removeItem(atPath: guests + "/g\(index - 1).img") }
            if index == 99 {
                Thread.sleep(forTimeInterval: 0.3)  // the last sessions end (their DONE wait)
                baseline = (Self.openDescriptors(pid), Self.residentKiB(pid))
            }
        }
        Thread.sleep(forTimeInterval: 0.3)
        let end = (fds: Self.openDescriptors(pid), rssKiB: Self.residentKiB(pid))
        let seconds = Date().timeIntervalSince(start)
        let first = try #require(baseline)
        print(
            String(
                format:
                    "serve leak: %d migrations in %.1f s; after 100: %d fds, %d KiB RSS; after %d: %d fds, %d KiB RSS (%+d fds, %+d KiB)",
                Self.migrations, seconds, first.fds, first.rssKiB, Self.migrations, end.fds, end.rssKiB,
                end.fds - first.fds, end.rssKiB - first.rssKiB))
        #expect(
            abs(end.fds - first.fds) <= Self.fdSlack,
            "descriptors: \(first.fds) after 100 migrations, \(end.fds) after \(Self.migrations)")
        #expect(
            end.rssKiB - first.rssKiB < Self.rssBoundKiB,
            "RSS: \(first.rssKiB) KiB after 100 migrations, \(end.rssKiB) KiB after \(Self.migrations)")
    }
}
