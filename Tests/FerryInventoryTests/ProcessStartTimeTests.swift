import FerryTestSupport
import Foundation
import Glibc
import Testing

@testable import FerryInventory

@Suite struct ProcessStartTimeTests {
    @Test func thisProcessHasAStableStartTime() throws {
        let first = try #require(ProcessStartTime.ofThisProcess())
        #expect(first > 0)
        #expect(ProcessStartTime.read(pid: getpid()) == first)
        #expect(ProcessStartTime.observe(pid: getpid()) == .started(at: first))
    }

    @Test func aPIDWithoutAProcessIsAbsent() throws {
        let maximum = try String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8)
        let beyond = Int32(maximum.trimmingCharacters(in: .whitespacesAndNewlines))! + 1
        #expect(ProcessStartTime.read(pid: beyond) == nil)
        #expect(ProcessStartTime.observe(pid: beyond) == .absent)
    }

    /// A real child: started after this process (a later tick), absent once it exited and was reaped.
    @Test func childStartsLaterAndIsAbsentAfterItExits() throws {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["30"]
        try child.run()
        let pid = child.processIdentifier
        let started = try #require(ProcessStartTime.read(pid: pid))
        #expect(started >= ProcessStartTime.ofThisProcess()!)
        kill(pid, SIGKILL)
        child.waitUntilExit()
        #expect(ProcessStartTime.read(pid: pid) == nil)
    }

    @Test func commandNamesWithSpacesAndParenthesesAreSkipped() {
        let fields = (3...52).map { $0 == 22 ? "987654" : String($0) }.joined(separator: " ")
        let line = "4242 (ferry vmm (web) x) " + fields + "\n"
        #expect(ProcessStartTime.parse(stat: ArraySlice(Array(line.utf8))) == 987654)
        #expect(ProcessStartTime.parse(stat: ArraySlice(Array("4242 (short) S 1".utf8))) == nil)
    }
}
