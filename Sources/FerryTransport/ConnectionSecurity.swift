import FerryProtocol
import Foundation

/// What one side asks of its connections: a shared key (none: the handshake is skipped and a peer
/// that wants one is refused), whether to encrypt, and the ciphers it will use.
public struct ConnectionSecurity: Sendable {
    public var key: SharedKey?
    /// Source: ask for encryption. Destination: encrypt every connection even when the source did
    /// not ask (`--require-encryption`).
    public var encrypt: Bool
    /// Ciphers this side accepts, most preferred first; the destination picks the first one the
    /// source offers.
    public var ciphers: [RecordCipher]

    public init(key: SharedKey?, encrypt: Bool = false, ciphers: [RecordCipher] = RecordCipher.preferredOrder) {
        self.key = key
        self.encrypt = encrypt
        self.ciphers = ciphers.filter { $0 != .none }
    }

    /// No key: plain connections, as before authentication existed.
    public static let none = ConnectionSecurity(key: nil)
}

/// What a connection's handshake established.
public struct ConnectionSecurityState: Sendable, Equatable, CustomStringConvertible {
    /// The peer proved it holds the shared key.
    public var authenticated: Bool
    /// The AEAD protecting every byte after the handshake; `.none`: not encrypted.
    public var cipher: RecordCipher

    public static let plain = ConnectionSecurityState(authenticated: false, cipher: .none)

    public var description: String {
        guard authenticated else { return "not authenticated, not encrypted" }
        return cipher == .none ? "authenticated, not encrypted" : "authenticated, encrypted with \(cipher)"
    }
}

extension RecordCipher {
    /// AES-256-GCM first when the CPU has AES instructions (x86 AES-NI, ARMv8 AES), else
    /// ChaCha20-Poly1305, which is faster in software.
    public static let preferredOrder: [RecordCipher] =
        hasHardwareAES ? [.aes256GCM, .chacha20Poly1305] : [.chacha20Poly1305, .aes256GCM]

    /// Whether /proc/cpuinfo lists the `aes` flag (x86 "flags", ARM "Features").
    public static let hasHardwareAES: Bool = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        for line in text.split(separator: "\n") where line.hasPrefix("flags") || line.hasPrefix("Features") {
            if line.split(separator: " ").contains("aes") { return true }
        }
        return false
    }()

    /// Parses a cipher name as given on the command line: "aes-256-gcm" (or "aes-gcm"),
    /// "chacha20-poly1305" (or "chacha").
    public init?(name: String) {
        switch name.lowercased() {
        case "aes-256-gcm", "aes-gcm", "aes": self = .aes256GCM
        case "chacha20-poly1305", "chacha20", "chacha": self = .chacha20Poly1305
        case "none": self = .none
        default: return nil
        }
    }
}
