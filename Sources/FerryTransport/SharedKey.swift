import Crypto
import FerrySystem
import Foundation
import Glibc

/// The secret both peers hold (`--key-file`): at least 32 bytes (a key file gives exactly 32), not all zero.
///
/// A key file holds exactly 64 hex digits (what `generate(path:)` writes), optionally followed by
/// trailing whitespace (a newline, CR, spaces, tabs), which are decoded to 32 bytes; or exactly 32
/// raw bytes, used as they are. Anything else is refused with the reason (issue 11: a truncated
/// 63-digit file, or one holding the key twice, used to be taken silently as raw bytes), and so is
/// a key of zeros. The file must be a
/// regular file that neither its group nor other users can access (mode 0600 or 0400), like an
/// SSH private key: a secret others can read protects nothing.
///
/// `@unchecked Sendable`: `SymmetricKey` (not marked Sendable by swift-crypto 3) is an immutable
/// value; nothing mutates its bytes after `init`, so threads may share it.
public struct SharedKey: @unchecked Sendable {
    public static let minimumBytes = 32
    static let maximumFileBytes = 4096

    let key: SymmetricKey

    /// A key from its bytes; fewer than 32, or all zero, are refused.
    public init(bytes: [UInt8]) throws(TransportError) {
        guard bytes.count >= Self.minimumBytes else {
            throw TransportError(
                .keyFile,
                "a key needs at least \(Self.minimumBytes) bytes of secret, this one has \(bytes.count); make one with `ferry keygen --out FILE`"
            )
        }
        guard bytes.contains(where: { $0 != 0 }) else {
            throw TransportError(
                .keyFile, "the key is all zero bytes, which is no secret; make one with `ferry keygen --out FILE`")
        }
        key = SymmetricKey(data: bytes)
    }

    /// Reads and checks a key file (format and permissions above).
    public static func load(path: String) throws(TransportError) -> SharedKey {
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        } catch {
            let hint = error.errno == Errno(ELOOP) ? " (a symbolic link: name the file itself)" : ""
            throw TransportError(.keyFile, "cannot open key file \(path)", failed: error, hint: hint)
        }
        defer { close(fd) }
        var info = stat()
        do throws(SystemError) {
            try valueOrErrno("fstat(\(path))") { fstat(fd, &info) }
        } catch {
            throw TransportError(.keyFile, "fstat on key file \(path)", failed: error)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw TransportError(.keyFile, "key file \(path) is not a regular file")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw TransportError(
                .keyFile,
                "key file \(path) can be accessed by other users (mode \(String(mode, radix: 8))): run `chmod 600 \(path)`; a key others can read protects nothing"
            )
        }
        var bytes = [UInt8](repeating: 0, count: maximumFileBytes + 1)
        var total = 0
        while total < bytes.count {
            let count: Int
            do throws(SystemError) {
                count = try valueOrErrno("read(\(path))") {
                    bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, $0.count - total) }
                }
            } catch {
                throw TransportError(.keyFile, "read key file \(path)", failed: error)
            }
            if count == 0 { break }
            total += count
        }
        guard total <= maximumFileBytes else {
            throw TransportError(
                .keyFile, "key file \(path) is larger than \(maximumFileBytes) bytes: is it really a key?")
        }
        do throws(TransportError) {
            return try SharedKey(bytes: decode(Array(bytes[0..<total])))
        } catch {
            throw TransportError(.keyFile, "key file \(path): \(error.message)")
        }
    }

    static let hexDigits = 2 * minimumBytes

    /// The key a file's contents stand for: 64 hex digits (then optional whitespace) decoded, or
    /// exactly 32 raw bytes as they are. Anything else throws a reason (without the file's name).
    static func decode(_ contents: [UInt8]) throws(TransportError) -> [UInt8] {
        let fix =
            "a key file holds exactly \(hexDigits) hex digits (and optionally a newline) or exactly \(minimumBytes) raw bytes; make one with `ferry keygen --out FILE`"
        var end = contents.count
        while end > 0, [0x0A, 0x0D, 0x20, 0x09].contains(contents[end - 1]) { end -= 1 }
        let text = contents[0..<end]
        let isHex = !text.isEmpty && text.allSatisfy({ hexValue($0) != nil })
        if contents.count == minimumBytes && !isHex {
            return contents
        }
        guard isHex else {
            throw TransportError(
                .keyFile,
                "holds \(contents.count) bytes that are neither \(hexDigits) hex digits nor \(minimumBytes) raw bytes (a key written twice, or a different file?); \(fix)"
            )
        }
        guard text.count == hexDigits else {
            let hint = text.count < hexDigits ? "truncated?" : "the key written twice, or a longer secret?"
            throw TransportError(.keyFile, "holds \(text.count) hex digits, not \(hexDigits) (\(hint)); \(fix)")
        }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 2)
        var index = text.startIndex
        while index < text.endIndex {
            out.append(hexValue(text[index])! << 4 | hexValue(text[index + 1])!)
            index += 2
        }
        return out
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A 32-byte key for another use of the same secret (HKDF-SHA256, `label` as its info, no
    /// salt), e.g. the agent API's request signatures: a MAC made with it never verifies in the
    /// migration handshake, which uses the key itself, nor in a use with another label.
    public func derived(for label: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Array(label.utf8), outputByteCount: 32)
    }

    /// A fresh random 32-byte key (for a process that runs both agents, like `ferry demo`).
    public static func random() -> SharedKey {
        try! SharedKey(bytes: randomSecret())
    }

    private static func randomSecret() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<minimumBytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// Writes a new random 32-byte key as 64 hex digits and a newline to a new file of mode 0600
    /// (an existing file is replaced only with `overwrite`).
    public static func generate(path: String, overwrite: Bool = false) throws(TransportError) {
        let secret = randomSecret()
        let text = Array((secret.map { String(format: "%02x", $0) }.joined() + "\n").utf8)
        if overwrite { unlink(path) }
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("open(\(path), O_CREAT|O_EXCL)") {
                open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            }
        } catch {
            throw TransportError(
                .keyFile, "create key file \(path)", failed: error,
                hint: error.errno == .fileExists ? "; pass --force to replace it" : "")
        }
        defer { close(fd) }
        _ = fchmod(fd, 0o600)  // in case the umask took bits away; never adds any
        let written: Int
        do throws(SystemError) {
            written = try valueOrErrno("write(\(path))") {
                text.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
            }
            try valueOrErrno("fsync(\(path))") { fsync(fd) }
        } catch {
            throw TransportError(.keyFile, "write key file \(path)", failed: error)
        }
        guard written == text.count else {
            throw TransportError(.keyFile, "write key file \(path): short write of \(written) of \(text.count) bytes")
        }
    }
}
