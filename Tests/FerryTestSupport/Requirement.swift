import FerryKVM
import Foundation
import Glibc
import Testing

/// What a test needs of the machine, for `.enabled(if: Requirement.X.met, Requirement.X.why)`:
/// where it is missing the test shows as skipped, with the reason, instead of passing.
public struct Requirement: Sendable {
    public let met: Bool
    /// Why the tests that need it are skipped here.
    public let why: Comment

    public init(met: Bool, why: String) {
        self.met = met
        self.why = Comment(rawValue: why)
    }

    /// A usable /dev/kvm.
    public static let kvm: Requirement = {
        let reason = KVMDevice.unavailableReason()
        return Requirement(met: reason == nil, why: "/dev/kvm is not usable here: \(reason ?? "")")
    }()

    /// Running as root.
    public static let root = Requirement(met: getuid() == 0, why: "needs root")

    /// Root and the iproute2 tools `ip` and `bridge`, to build network namespaces.
    public static let namespaces = Requirement(
        met: getuid() == 0 && Host.tool("ip") != nil && Host.tool("bridge") != nil,
        why: "needs root and iproute2 (ip, bridge) to build network namespaces")

    /// gcc and objcopy in /usr/bin, to build the KVM guest program.
    public static let gcc = Requirement(
        met: FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/objcopy"),
        why: "needs gcc and objcopy in /usr/bin (install gcc and binutils)")

    /// Root and mount(8), to mount a small tmpfs.
    public static let mount = Requirement(
        met: getuid() == 0 && Host.tool("mount") != nil,
        why: "mounting a tmpfs needs root and mount(8)")

    /// An executable file at `path` (e.g. the built `ferry`).
    public static func executable(_ path: String, _ why: String) -> Requirement {
        Requirement(met: FileManager.default.isExecutableFile(atPath: path), why: why)
    }
}

/// The machine the tests run on.
public enum Host {
    /// The path of a system tool (`ip`, `bridge`, `mount`) in the usual directories, if any.
    public static func tool(_ name: String) -> String? {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(name)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Runs `arguments` (the first is the executable's path) and returns its output (stdout and
    /// stderr); throws if it exits non-zero and `mustSucceed`.
    @discardableResult
    public static func run(_ arguments: [String], mustSucceed: Bool = true) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        if mustSucceed && process.terminationStatus != 0 {
            throw HostError(
                description: "\(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(text)")
        }
        return text
    }
}

public struct HostError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}
