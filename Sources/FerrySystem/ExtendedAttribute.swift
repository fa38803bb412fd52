import CFerryShims
import Glibc

/// Extended attributes of a file (`setxattr`, `getxattr`, `removexattr`, in the `user.`
/// namespace): small named values that stay with the file, not with the path that reached it.
/// A cold migration writes one into a disk to find out whether another host sees the same file
/// (docs/cold-migration.md, "Shared storage").
public enum ExtendedAttribute {
    /// Sets `name` (for example `user.ferry.claim`) on `path` to `value`, replacing it.
    public static func set(path: String, name: String, value: [UInt8]) throws(SystemError) {
        let result = value.withUnsafeBytes { ferry_setxattr(path, name, $0.baseAddress, $0.count) }
        if result != 0 {
            throw SystemError(call: "setxattr(\"\(path)\", \"\(name)\")", errno: Errno(rawValue: -result), detail: "")
        }
    }

    /// The value of `name` on `path`; nil when the file has no such attribute (or no file is there).
    public static func get(path: String, name: String, limit: Int = 256) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: limit)
        let count = buffer.withUnsafeMutableBytes { ferry_getxattr(path, name, $0.baseAddress, $0.count) }
        guard count >= 0 else { return nil }
        return Array(buffer[..<Int(count)])
    }

    /// Removes `name` from `path`; whether it was there.
    @discardableResult
    public static func remove(path: String, name: String) -> Bool { ferry_removexattr(path, name) == 0 }
}
