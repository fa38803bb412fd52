import FerryDecisions
import FerryTestSupport
import Foundation
import Logging
import Testing

@testable import FerryAgent

/// The agent's health directory (`--health-dir`) read from a scratch directory: each format
/// good, malformed and missing; a file that turns unreadable keeps its last good reading and is
/// listed; the monitor's verdicts from the files.
@Suite struct HealthDirectoryTests {
    @Test func eachFormatIsRead() throws {
        let scratch = Scratch()
        let files = HealthFiles(scratch.path)
        try files.memoryController(0, corrected: 3, uncorrected: 0)
        try files.memoryController(1, corrected: 0, uncorrected: 1)
        try files.smart(
            "sda",
            [
                .init(5, "Reallocated_Sector_Ct", value: 100, threshold: 36, raw: 8),
                .init(197, "Current_Pending_Sector", value: 100, threshold: 0),
            ])
        try files.sel([
            "   1 | 12/04/2026 | 10:00:00 | Memory #0x01 | Uncorrectable ECC | Asserted",
            "   2 | Pre-Init  |0000000012| Power Unit #0x01 | Power off/down | Deasserted",
            "   3 | 02/29/2000 | 23:59:59 | Temperature #0x30 | Upper Critical going high | Asserted | Reading 95 > Threshold 90 degrees C",
        ])
        // Not health files: ignored.
        try files.write("edac/mc/power/ce_count", "9\n")
        try files.write("smart/sda.txt", "smartctl 7.3\n")
        var lastGood = HealthDirectory.LastGood()
        let reading = HealthDirectory(path: scratch.path).read(&lastGood)
        #expect(reading.unreadable == [])
        #expect(
            reading.memoryControllers == [
                MemoryControllerCounts(name: "mc0", corrected: 3, uncorrected: 0),
                MemoryControllerCounts(name: "mc1", corrected: 0, uncorrected: 1),
            ])
        #expect(
            reading.disks == [
                SMARTDisk(
                    name: "sda",
                    attributes: [
                        SMARTAttribute(
                            id: 5, name: "Reallocated_Sector_Ct", value: 100, worst: 100, threshold: 36, raw: 8),
                        SMARTAttribute(
                            id: 197, name: "Current_Pending_Sector", value: 100, worst: 100, threshold: 0, raw: 0),
                    ])
            ])
        #expect(
            reading.events == [
                SELEntry(
                    timeSeconds: 1_796_378_400, sensor: "Memory #0x01", event: "Uncorrectable ECC", asserted: true),
                SELEntry(timeSeconds: nil, sensor: "Power Unit #0x01", event: "Power off/down", asserted: false),
                SELEntry(
                    timeSeconds: 951_868_799, sensor: "Temperature #0x30", event: "Upper Critical going high",
                    asserted: true),
            ])
    }

    /// Nothing there says nothing: no directory, empty subdirectories, a disk without ATA
    /// attributes (an NVMe drive), an event log with no entries. A controller without `ue_count`
    /// is unreadable.
    @Test func whatIsMissingSaysNothing() throws {
        let scratch = Scratch()
        var lastGood = HealthDirectory.LastGood()
        #expect(HealthDirectory(path: scratch.file("absent")).read(&lastGood) == HealthReading())
        let files = HealthFiles(scratch.path)
        try FileManager.default.createDirectory(atPath: scratch.file("edac/mc"), withIntermediateDirectories: true)
        try files.write(
            "smart/nvme0n1.json", #"{"smartctl": {"exit_status": 0}, "nvme_smart_health_information_log": {}}"#)
        try files.sel(["SEL has no entries"])
        #expect(
            HealthDirectory(path: scratch.path).read(&lastGood)
                == HealthReading(disks: [SMARTDisk(name: "nvme0n1", attributes: [])]))
        try files.write("edac/mc/mc0/ce_count", "0\n")
        #expect(
            HealthDirectory(path: scratch.path).read(&lastGood).unreadable == ["edac/mc/mc0: ue_count missing"])
    }

    /// Malformed files are listed with what is wrong, and a file that was good before keeps its
    /// last good reading; a bad event-log line is listed and skipped, the others kept.
    @Test func malformedFilesAreListedAndTheLastGoodStands() throws {
        let scratch = Scratch()
        let files = HealthFiles(scratch.path)
        try files.memoryController(0, corrected: 0, uncorrected: 2)
        try files.smart("sda", [.init(5, "Reallocated_Sector_Ct", value: 20, threshold: 36)])
        let directory = HealthDirectory(path: scratch.path)
        var lastGood = HealthDirectory.LastGood()
        let good = directory.read(&lastGood)

        try files.write("edac/mc/mc0/ue_count", "two\n")
        try files.write("smart/sda.json", #"{"ata_smart_attributes": {"table": [{"id": 5"#)
        try files.write("smart/sdb.json", #"{"ata_smart_attributes": {"table": [{"id": 5, "name": "x", "value": 1}]}}"#)
        try files.sel([
            "   1 | 12/04/2026 | 10:00:00 | Memory #0x01 | Correctable ECC | Asserted",
            "garbage",
            "   3 | 13/04/2026 | 10:00:00 | Memory #0x01 | Correctable ECC | Asserted",
            "   4 | 12/04/2026 | 10:00:00 | Memory #0x01 | Correctable ECC | Maybe",
        ])
        let bad = directory.read(&lastGood)
        #expect(bad.memoryControllers == good.memoryControllers && bad.disks == good.disks, "the last good stands")
        #expect(bad.events.count == 1)
        #expect(
            bad.unreadable == [
                "edac/mc/mc0: ue_count is \"two\", not a count",
                "smart/sda.json: not smartctl's JSON (not JSON)",
                "smart/sdb.json: not smartctl's JSON (no worst)",
                "ipmi/sel line 2: 1 fields, not 6",
                "ipmi/sel line 3: \"13/04/2026 10:00:00\" is not MM/DD/YYYY HH:MM:SS",
                "ipmi/sel line 4: \"Maybe\" is neither Asserted nor Deasserted",
            ], "\(bad.unreadable)")
    }

    /// The monitor: healthy without a directory (and nothing for the heartbeat); failing from an
    /// uncorrected error, with a deadline that runs down; still failing while the counter's file
    /// is being rewritten badly, the file listed in the detail; healthy once the counter is reset.
    @Test func theMonitorJudgesTheFiles() throws {
        let none = HealthMonitor(directory: nil, logger: Logger(label: "test"))
        #expect(none.look() == .healthy && none.signals(.healthy) == nil && none.report(.healthy) == nil)

        let scratch = Scratch()
        let files = HealthFiles(scratch.path)
        let monitor = HealthMonitor(directory: scratch.path, logger: Logger(label: "test"))
        #expect(monitor.look() == .healthy)
        #expect(monitor.signals(.healthy) == .init(state: .healthy, reason: ""))
        try files.memoryController(0, corrected: 0, uncorrected: 1)
        let failing = monitor.look()
        #expect(failing.state == .failing && failing.reason == "memory controller mc0: 1 uncorrected error")
        #expect(failing.deadlineSeconds.map { $0 <= 900 && $0 > 800 } == true, "\(failing)")
        try files.write("edac/mc/mc0/ue_count", "")
        let rewriting = monitor.look()
        #expect(
            rewriting.state == .failing
                && rewriting.detail.last == "unreadable: edac/mc/mc0: ue_count is \"\", not a count")
        #expect(rewriting.deadlineSeconds! <= failing.deadlineSeconds!)
        let report = try #require(monitor.report(rewriting))
        #expect(report.state == "failing" && report.directory == scratch.path && report.evacuateWithinSeconds != nil)
        try files.memoryController(0, corrected: 0, uncorrected: 0)
        #expect(monitor.look() == .healthy)
        #expect(monitor.latest == .healthy)
    }
}
