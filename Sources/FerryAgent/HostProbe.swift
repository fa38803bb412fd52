import CFerryShims
import FerryKVM
import FerrySystem
import Foundation
import Glibc

/// Reads the host's capacity, use and health from the kernel, each time it is asked (nothing is
/// cached: a report is as fresh as the request).
public struct HostProbe: Sendable {
    public var stateDirectory: String

    public init(stateDirectory: String) {
        self.stateDirectory = stateDirectory
    }

    /// CPUs in this process's affinity mask (`sched_getaffinity`), which a cgroup or `taskset`
    /// may make fewer than the machine has.
    public static func vcpus() throws(SystemError) -> Int {
        Int(try valueOrErrno("sched_getaffinity", .negatedErrno) { ferry_affinity_cpu_count() })
    }

    /// `MemTotal` and `MemAvailable` of /proc/meminfo, in bytes.
    public static func memory() throws(SystemError) -> (total: UInt64, available: UInt64) {
        let text = try readProcFile("/proc/meminfo")
        var values: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kibibytes = UInt64(fields[1]) else { continue }
            values[String(fields[0].dropLast())] = kibibytes * 1024
        }
        guard let total = values["MemTotal"], let available = values["MemAvailable"] else {
            throw SystemError(
                code: .unexpectedContent, call: "read(\"/proc/meminfo\")", errno: nil,
                detail: "no MemTotal or MemAvailable line (needs Linux 3.14+)")
        }
        return (total, available)
    }

    /// The size of the file system holding `path` and what unprivileged users may still write.
    public static func disk(_ path: String) throws(SystemError) -> (total: UInt64, available: UInt64) {
        var info = statvfs()
        try valueOrErrno("statvfs(\"\(path)\")") { statvfs(path, &info) }
        let unit = UInt64(info.f_frsize)
        return (UInt64(info.f_blocks) * unit, UInt64(info.f_bavail) * unit)
    }

    /// /proc/loadavg's one-minute average.
    public static func loadAverage() throws(SystemError) -> Double {
        let text = try readProcFile("/proc/loadavg")
        guard let first = text.split(separator: " ").first, let value = Double(first) else {
            throw SystemError(
                code: .unexpectedContent, call: "read(\"/proc/loadavg\")", errno: nil, detail: "not a load average")
        }
        return value
    }

    /// Whether a file can be created and written in `directory`: an unnamed file (`O_TMPFILE`)
    /// that vanishes on close, so the check leaves nothing behind and cannot collide.
    public static func writableCheck(_ directory: String) -> HostReport.Check {
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("open(\"\(directory)\", O_TMPFILE)", .negatedErrno) { ferry_open_tmpfile(directory) }
        } catch {
            return HostReport.Check(ok: false, detail: "cannot create a file in \(directory): \(error)")
        }
        defer { close(fd) }
        var byte: UInt8 = 0x46
        guard write(fd, &byte, 1) == 1 else {
            let error = SystemError.lastError("write(O_TMPFILE in \"\(directory)\")")
            return HostReport.Check(ok: false, detail: "cannot write in \(directory): \(error)")
        }
        return HostReport.Check(ok: true, detail: "\(directory) is writable")
    }

    /// Whether /dev/kvm can run Ferry's KVM guest.
    public static func kvmCheck() -> HostReport.Check {
        if let reason = KVMDevice.unavailableReason() {
            return HostReport.Check(ok: false, detail: reason)
        }
        return HostReport.Check(ok: true, detail: "/dev/kvm is usable")
    }

    /// Capacity, use and health now; `agent` is the identity part, which the agent fills.
    public func report(agent: HostReport.Agent) throws(SystemError) -> HostReport {
        let memory = try Self.memory()
        let disk = try Self.disk(stateDirectory)
        let writable = Self.writableCheck(stateDirectory)
        return HostReport(
            agent: agent,
            capacity: .init(vcpus: try Self.vcpus(), memoryBytes: memory.total, diskBytes: disk.total),
            usage: .init(
                memoryAvailableBytes: memory.available, diskAvailableBytes: disk.available,
                loadAverage1m: try Self.loadAverage()),
            health: .init(ok: writable.ok, kvm: Self.kvmCheck(), stateDirectoryWritable: writable))
    }

    static func readProcFile(_ path: String) throws(SystemError) -> String {
        let fd = try valueOrErrno("open(\"\(path)\")") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = try valueOrErrno("read(\"\(path)\")") {
                chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
