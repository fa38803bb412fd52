import Glibc

/// Reads when a process started (field 22 of /proc/PID/stat, clock ticks after boot), so the
/// agent can tell a guest's process from another that got its PID later. The agent records it
/// with the PID and compares it when it comes back (`PIDObservation`).
public enum ProcessStartTime {
    /// The start tick of process `pid`, or nil if there is no such process (or /proc cannot be read).
    public static func read(pid: Int32) -> UInt64? {
        let descriptor = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        var length = 0
        while length < bytes.count {
            let count = bytes.withUnsafeMutableBytes { buffer in
                Glibc.read(descriptor, buffer.baseAddress! + length, buffer.count - length)
            }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            length += count
        }
        return parse(stat: bytes[0..<length])
    }

    /// What `read(pid:)` returns for the process it runs in.
    public static func ofThisProcess() -> UInt64? { read(pid: getpid()) }

    /// Field 22 of a /proc/PID/stat line. The command name (field 2) is in parentheses and may
    /// hold spaces and ')', so the fields are counted from the last ')'.
    static func parse(stat: ArraySlice<UInt8>) -> UInt64? {
        guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (the state), so field 22 is fields[19].
        guard fields.count > 19 else { return nil }
        return UInt64(String(decoding: fields[19], as: UTF8.self))
    }

    /// What the agent puts into `HostObservation.pids` for one recorded PID.
    public static func observe(pid: Int32) -> PIDObservation {
        read(pid: pid).map { .started(at: $0) } ?? .absent
    }
}
