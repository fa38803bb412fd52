import Foundation
import Glibc
import Synchronization

/// A scratch directory (on tmpfs unless told otherwise), unique to the test process and call,
/// removed with everything in it when this goes away.
public final class Scratch: Sendable {
    private static let counter = Atomic<Int>(0)
    public let path: String

    /// `name` (the calling function's by default) goes into the directory's name, to tell whose it is.
    public init(_ name: String = #function, in directory: String = "/dev/shm") {
        path = "\(directory)/\(scratchName(name))"
        try? FileManager.default.removeItem(atPath: path)
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func file(_ name: String) -> String { path + "/" + name }

    fileprivate static func next() -> Int { counter.add(1, ordering: .relaxed).newValue }
}

/// A unique file path (on tmpfs unless told otherwise) for one file that the test removes
/// itself (`remove()`, or `defer { unlink(path) }`).
public struct ScratchFile: Sendable {
    public let path: String

    public init(_ name: String, in directory: String = "/dev/shm") {
        path = "\(directory)/\(scratchName(name))"
    }

    public func remove() { unlink(path) }

    public func read() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Bytes the file occupies on disk (-1 if it does not exist).
    public func allocatedBytes() -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { return -1 }
        return Int(st.st_blocks) * 512
    }
}

/// `ferry-test-PID-N-NAME`, NAME reduced to letters, digits, '.', '-' and '_' (at most 40).
private func scratchName(_ name: String) -> String {
    let safe = name.filter { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" }
    return "ferry-test-\(getpid())-\(Scratch.next())-\(safe.prefix(40))"
}
