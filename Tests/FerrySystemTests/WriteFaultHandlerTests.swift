import CFerryShims
import FerrySystem
import Foundation
import Testing

extension TrackerTests {
    /// Faults outside tracked ranges go to the handler installed before ours, honouring its kind.
    /// Each case runs in a forked child (see write_fault_selftest.c).
    @Test(arguments: [
        (0, "SIG_DFL: killed by SIGSEGV"),
        (1, "SA_SIGINFO handler: called"),
        (2, "plain handler: called"),
        (3, "SIG_IGN: a real fault still kills"),
    ])
    func unrelatedFaultsGoToThePreviousHandler(mode: Int32, expectation: String) throws {
        let status = ferry_wp_test_chain_in_child(mode)
        try #require(status >= 0, "fork failed: errno \(-status)")
        let exited = status & 0x7F == 0
        let exitCode = (status >> 8) & 0xFF
        let signal = status & 0x7F
        switch mode {
        case 1: #expect(exited && exitCode == 42, "\(expectation); status \(status)")
        case 2: #expect(exited && exitCode == 43, "\(expectation); status \(status)")
        default: #expect(!exited && signal == SIGSEGV, "\(expectation); status \(status)")
        }
    }

    /// Writing every other page of a 256 MiB region makes 32768 writable islands, more mappings
    /// than vm.max_map_count (65530) allows. The handler must then unprotect the whole range,
    /// the next harvest must report every page and re-protect (merging the mappings back), and
    /// tracking must carry on page by page. Runs in a forked child: at the mapping limit, any
    /// other mmap in the process would fail.
    @Test(
        .enabled(
            if: maxMapCount <= 65536,  // each island adds about two mappings
            "vm.max_map_count is \(maxMapCount), 32768 islands cannot reach it"),
        arguments: [false, true])
    func mappingLimitOverflowLosesNoWrite(shared: Bool) throws {
        let pages = 65536
        var report = ferry_wp_overflow_report()
        let start = MonotonicClock.now()
        let status = ferry_wp_test_overflow_in_child(pages, shared ? 1 : 0, &report)
        let seconds = Double(MonotonicClock.now() - start) / 1e9
        print(
            "overflow (\(shared ? "shared" : "private") anonymous): \(report.overflows) overflow(s), mappings \(report.maps_before_harvest) before harvest, "
                + "\(report.maps_after_harvest) after; first harvest \(report.first_found) pages; took \(seconds) s")
        try #require(status >= 0, "fork failed: errno \(-status)")
        #expect(
            status & 0x7F == 0 && (status >> 8) & 0xFF == 0,
            "child failed at step \((status >> 8) & 0xFF), status \(status)")
        #expect(report.overflows >= 1, "the mapping limit was never hit")
        #expect(report.first_found == UInt64(pages))
        #expect(report.first_all_set == 1)
        #expect(report.maps_after_harvest < 1000, "re-protecting the whole range should merge the mappings")
        #expect(report.second_found == 1)
        #expect(report.second_only_that_page == 1)
        #expect(report.data_intact == 1)
    }
}

/// vm.max_map_count (0 if unreadable): the mapping-limit tests need a limit they can reach.
let maxMapCount =
    Int(
        ((try? String(contentsOfFile: "/proc/sys/vm/max_map_count", encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
