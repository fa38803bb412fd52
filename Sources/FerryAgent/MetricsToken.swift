import Crypto
import Glibc

/// A read-only bearer token for `GET /metrics` (`ferry agent --metrics-token-file`), so that
/// Prometheus, which cannot sign requests, can scrape the agent: `Authorization: Bearer TOKEN`
/// reads `/metrics` and nothing else (docs/agent.md, "Authentication").
///
/// The file holds the token (16 to 512 visible ASCII characters, then optional whitespace) and,
/// like the key file, must be a regular file that neither its group nor others can access.
/// Only the token's SHA-256 is kept; a presented token is compared by its SHA-256 in constant time.
public struct MetricsToken: Sendable {
    public static let scheme = "Bearer"
    private let digest: [UInt8]

    public init(token: String) throws(MetricsTokenError) {
        let bytes = Array(token.utf8)
        guard (16...512).contains(bytes.count), bytes.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw MetricsTokenError(
                "a metrics token is 16 to 512 visible ASCII characters without spaces, this one has \(bytes.count) characters; make one with `openssl rand -hex 32`"
            )
        }
        digest = Array(SHA256.hash(data: bytes))
    }

    /// Reads and checks a token file (its form above, mode 0600 or 0400).
    public static func load(path: String) throws(MetricsTokenError) -> MetricsToken {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw MetricsTokenError("cannot open the metrics token file \(path): \(reason)")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw MetricsTokenError("the metrics token file \(path) is not a regular file")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw MetricsTokenError(
                "the metrics token file \(path) can be accessed by other users (mode \(String(mode, radix: 8))): run `chmod 600 \(path)`"
            )
        }
        var bytes = [UInt8](repeating: 0, count: 1025)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        guard count >= 0, count <= 1024 else {
            throw MetricsTokenError("the metrics token file \(path) cannot be read, or is larger than 1024 bytes")
        }
        var text = bytes[0..<count]
        while let last = text.last, [0x0A, 0x0D, 0x20, 0x09].contains(last) { text.removeLast() }
        do throws(MetricsTokenError) {
            return try MetricsToken(token: String(decoding: text, as: UTF8.self))
        } catch {
            throw MetricsTokenError("the metrics token file \(path): \(error.message)")
        }
    }

    /// Whether `presented` is the token (compared in constant time).
    public func matches(_ presented: some StringProtocol) -> Bool {
        let other = Array(SHA256.hash(data: Array(presented.utf8)))
        var difference: UInt8 = 0
        for (left, right) in zip(digest, other) { difference |= left ^ right }
        return difference == 0
    }

    /// The token in an `Authorization` header (`Bearer TOKEN`), nil when the header is another scheme.
    static func presented(in authorization: String?) -> Substring? {
        guard let authorization, authorization.hasPrefix(scheme + " ") else { return nil }
        return authorization.dropFirst(scheme.count + 1).drop(while: { $0 == " " })
    }
}

/// A metrics token file that cannot be used; `message` names the problem and the fix.
public struct MetricsTokenError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
