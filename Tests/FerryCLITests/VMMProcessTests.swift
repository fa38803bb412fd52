import FerryHostModel
import FerrySystem
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// `ferry vmm` as an agent drives it: real processes, the real control socket (docs/vmm-control.md).
@Suite(
    "ferry vmm: one process per guest, driven through its control socket", .serialized,
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct VMMProcessTests {
    @Test("a detached builtin guest outlives its launcher and answers hello, status, pause/resume and console")
    func bootAndControl() throws {
        let vmm = VMMHarness("vmm-boot")
        let (pid, _) = try vmm.detach(["--spec", try vmm.specFile()])
        // The launcher has exited: the guest runs on, in a session of its own.
        #expect(getsid(pid) == pid, "the vmm is not in a session of its own")
        let client = try vmm.client()
        let hello = try client.call("hello")
        #expect(hello["guest_id"]?.stringValue == vmm.id.hex)
        #expect(hello["pid"]?.intValue == Int(pid))
        #expect(hello["protocol"]?.intValue == ControlProtocol.version)
        #expect(hello["kind"]?.stringValue == "builtin" && hello["name"]?.stringValue == "g1")
        let identity = try #require(ProcessIdentity.of(pid: pid))
        #expect(hello["process_start_ticks"]?.doubleValue == Double(identity.startTicks))

        let first = try vmm.steps(client)
        usleep(300_000)
        let second = try vmm.steps(client)
        #expect(second > first, "the guest does not progress: \(first) then \(second)")
        let running = try client.call("status")
        let cpu = running["vcpu_cpu_ns"]?.arrayValue?.compactMap(\.doubleValue) ?? []
        #expect(cpu.count == running["vcpus"]?.intValue && cpu.allSatisfy { $0 > 0 }, "\(running.line)")
        #expect(running["cpu_ns"]?.doubleValue == cpu.reduce(0, +))
        #expect(try client.call("pause")["state"]?.stringValue == "paused")
        let paused = try vmm.steps(client)
        let pausedCPU = try client.call("status")["cpu_ns"]?.doubleValue ?? 0
        usleep(300_000)
        #expect(try vmm.steps(client) == paused, "steps moved while paused")
        let idle = (try client.call("status")["cpu_ns"]?.doubleValue ?? 0) - pausedCPU
        #expect(idle >= 0 && idle < 10_000_000, "a paused vCPU used \(idle) ns of CPU in 300 ms")
        #expect(throws: VMMError.self) { try client.call("pause") }  // wrong_state
        #expect(try client.call("resume")["state"]?.stringValue == "running")
        usleep(300_000)
        #expect(try vmm.steps(client) > paused)

        let console = try client.call("console", ["since": 0])
        let texts = console["lines"]?.arrayValue?.compactMap { $0["text"]?.stringValue } ?? []
        #expect(texts.contains { $0.hasPrefix("progress: vCPU steps") }, "console: \(texts)")
        #expect(texts.contains("ferry vmm: paused") && texts.contains("ferry vmm: running"))
        let next = try #require(console["next"]?.intValue)
        let later = try client.call("console", ["since": JSONValue(next)])
        #expect(later["lines"]?.arrayValue?.first?["seq"]?.intValue ?? next == next)
    }

    @Test("a booted guest's image is resident before it runs: its data is faulted in, its large holes stay holes")
    func imageIsResidentAtBoot() throws {
        let vmm = VMMHarness("vmm-resident")
        // 32 MiB of data, then a 32 MiB hole: the guest's 64 MiB image.
        let image = "\(vmm.stateDir)/\(vmm.id.hex).img"
        let created = try FerryProcess.run(["image", "create", image, "--size", "32M", "--seed", "7"], timeout: 60)
        try #require(created.status == 0, "ferry image create failed: \(created.stderr)")
        try #require(truncate(image, 64 << 20) == 0)
        // A guest that writes 64 KiB/s touches few pages of its own by the time it is measured.
        let (pid, _) = try vmm.detach(["--spec", try vmm.specFile(workload: "uniform:64KB/s")])
        let resident = Self.shmemBytes(pid)
        // Without the fault-in, only the pages the guest wrote so far (a few) are resident.
        #expect(resident >= 32 << 20, "\(resident >> 10) KiB of the image resident, not its 32 MiB of data")
        #expect(resident < 40 << 20, "\(resident >> 10) KiB resident: the 32 MiB hole was faulted in too")
    }

    /// RssShmem (the image's pages mapped in) of process `pid`, in bytes.
    static func shmemBytes(_ pid: pid_t) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("RssShmem:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        return 0
    }

    @Test("malformed and oversized requests are refused naming the field; clients that vanish change nothing")
    func malformedRequests() throws {
        let vmm = VMMHarness("vmm-bad")
        _ = try vmm.detach(["--spec", try vmm.specFile()])
        let client = try vmm.client()
        let cases: [(String, String?)] = [
            ("not json", nil), (#"[1,2]"#, nil), (#"{"id":1}"#, "op"), (#"{"id":1,"op":7}"#, "op"),
            (#"{"id":1,"op":"reboot"}"#, "op"), (#"{"id":{},"op":"hello"}"#, "id"),
            (#"{"id":1,"op":"console","since":-1}"#, "since"), (#"{"id":1,"op":"migrate"}"#, "to"),
            (#"{"id":1,"op":"migrate","to":"nowhere"}"#, "to"),
            (#"{"id":1,"op":"migrate","to":"127.0.0.1:1","max_rounds":"many"}"#, "max_rounds"),
            (#"{"id":1,"op":"shutdown","timeout_ms":true}"#, "timeout_ms"),
        ]
        for (line, field) in cases {
            let response = try client.send(line: line)
            #expect(response["ok"]?.boolValue == false, "accepted: \(line)")
            #expect(response["error"]?["code"]?.stringValue == "bad_request", "\(line): \(response.line)")
            #expect(response["error"]?["field"]?.stringValue == field, "\(line): \(response.line)")
        }
        // A client that sends half a request and disconnects, and another that asks and leaves.
        let half = try UnixLineConnection.connect(path: vmm.socketPath)
        _ = half.writeLine(String(#"{"id":1,"op":"pau"#))
        half.shutdownBoth()
        let leaver = try UnixLineConnection.connect(path: vmm.socketPath)
        _ = leaver.writeLine(#"{"id":1,"op":"status"}"#)
        leaver.shutdownBoth()
        #expect(try client.call("status")["state"]?.stringValue == "running")
        // Over the bound: answered too_large, then the connection is closed.
        let big = try vmm.client()
        let response = try big.send(
            line: #"{"id":1,"op":"hello","pad":""# + String(repeating: "x", count: ControlProtocol.maxRequestBytes)
                + #""}"#)
        #expect(response["error"]?["code"]?.stringValue == "too_large")
        #expect(throws: VMMError.self) { try big.call("hello") }
        // Several clients at once.
        let others = try (0..<4).map { _ in try vmm.client() }
        for other in others { #expect(try other.call("hello")["guest_id"]?.stringValue == vmm.id.hex) }
    }

    @Test("kill -9: the client gets a clear error, the socket is detected stale and a new vmm replaces it")
    func killNineLeavesStaleSocket() throws {
        let vmm = VMMHarness("vmm-kill")
        let spec = try vmm.specFile()
        let (pid, _) = try vmm.detach(["--spec", spec])
        let client = try vmm.client()
        #expect(try client.call("hello")["pid"]?.intValue == Int(pid))
        // A second vmm for the same guest while the first lives is refused (exit 9).
        let twin = try FerryProcess.run(["vmm", "--spec", spec, "--id", vmm.id.hex, "--state-dir", vmm.stateDir])
        #expect(twin.status == 9 && twin.stderr.contains("a live ferry vmm already serves"), "\(twin.stderr)")
        kill(pid, SIGKILL)
        let error = #expect(throws: VMMError.self) { try client.call("status") }
        #expect(error?.code == .disconnected, "\(String(describing: error))")
        // kill(2) returns before the process is gone, and a killed multi-threaded process
        // releases its descriptors only once its last thread has exited: poll.
        #expect(FileManager.default.fileExists(atPath: vmm.socketPath), "the socket file is left behind")
        let deadline = Date().addingTimeInterval(10)
        var stale: VMMError?
        while stale == nil && Date() < deadline {
            stale = Self.staleError(vmm.socketPath)
            if stale == nil { usleep(10_000) }
        }
        #expect(stale?.message.contains("nothing listens") == true, "never stale: \(String(describing: stale))")
        let (again, _) = try vmm.detach(["--spec", spec])
        #expect(try vmm.client().call("hello")["pid"]?.intValue == Int(again))
    }

    /// The `.stale` error connecting to `path` gives, nil while something answers there.
    static func staleError(_ path: String) -> VMMError? {
        let result = Result { () throws(VMMError) in try VMMControlClient(path: path) }
        guard case .failure(let error) = result, error.code == .stale else { return nil }
        return error
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return text.split(separator: ")").last?.split(separator: " ").first == "Z"
    }

    @Test("shutdown stops the vCPUs, flushes, answers stopped, and the process exits 0 and removes its socket")
    func gracefulShutdown() throws {
        let vmm = VMMHarness("vmm-stop")
        let process = try vmm.start(["--spec", try vmm.specFile()])
        let answer = try vmm.client().call("shutdown", ["timeout_ms": 5000])
        #expect(answer["state"]?.stringValue == "stopped")
        let outcome = process.wait(timeout: 10)
        #expect(outcome.status == 0 && outcome.signal == nil, "exit \(outcome.status): \(outcome.stderr)")
        #expect(outcome.stdout.hasPrefix("ready guest=\(vmm.id.hex)"))
        #expect(!FileManager.default.fileExists(atPath: vmm.socketPath))
    }

    @Test("a kill request stops the process at once (SIGKILL) and leaves no socket")
    func killRequest() throws {
        let vmm = VMMHarness("vmm-killreq")
        let process = try vmm.start(["--spec", try vmm.specFile()])
        #expect(try vmm.client().call("kill")["state"]?.stringValue == "killed")
        let outcome = process.wait(timeout: 10)
        #expect(outcome.signal == SIGKILL, "status \(outcome.status)")
        #expect(!FileManager.default.fileExists(atPath: vmm.socketPath))
    }

    @Test("a state directory whose socket path would pass 107 bytes is refused naming the limit")
    func socketPathLimit() throws {
        let vmm = VMMHarness("vmm-long")
        let deep = vmm.scratch.file(String(repeating: "d", count: 80))
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
        let outcome = try FerryProcess.run(
            ["vmm", "--spec", try vmm.specFile(), "--id", vmm.id.hex, "--state-dir", deep])
        #expect(outcome.status == 9)
        #expect(outcome.stderr.contains("at most 107"), "\(outcome.stderr)")
    }

    @Test("suspend writes the state beside the image and exits 0; --restore continues the guest's progress")
    func suspendRestore() throws {
        let vmm = VMMHarness("vmm-suspend")
        let process = try vmm.start(["--spec", try vmm.specFile()])
        usleep(500_000)
        let answer = try vmm.client().call("suspend")
        let file = try #require(answer["file"]?.stringValue)
        let saved = answer["vcpu_steps"]?.arrayValue?.compactMap(\.doubleValue) ?? []
        #expect(saved.count == 2 && saved.allSatisfy { $0 > 0 }, "\(answer.line)")
        #expect(process.wait(timeout: 10).status == 0)
        #expect(FileManager.default.fileExists(atPath: file))
        _ = try vmm.detach(["--restore", file])
        let client = try vmm.client()
        let resumed = try client.call("status")["vcpu_steps"]?.arrayValue?.compactMap(\.doubleValue) ?? []
        #expect(zip(resumed, saved).allSatisfy { $0 >= $1 }, "restored at \(resumed), saved at \(saved)")
        usleep(300_000)
        let later = try client.call("status")["vcpu_steps"]?.arrayValue?.compactMap(\.doubleValue) ?? []
        #expect(zip(later, resumed).allSatisfy { $0 > $1 }, "no progress after restore: \(resumed) then \(later)")
        #expect(!FileManager.default.fileExists(atPath: file), "a restored suspend file must not be restored twice")
    }
}
