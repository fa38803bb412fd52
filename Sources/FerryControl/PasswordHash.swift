import CAccountCrypto
import Foundation

/// scrypt's costs (RFC 7914): N = 2^`logN` iterations over blocks of 128·`blockSize` bytes,
/// `parallelism` times. One derivation holds 128·N·r bytes of memory.
public struct ScryptParameters: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var logN: Int
    public var blockSize: Int
    public var parallelism: Int

    public init(logN: Int, blockSize: Int, parallelism: Int) {
        self.logN = logN
        self.blockSize = blockSize
        self.parallelism = parallelism
    }

    /// OWASP's Password Storage Cheat Sheet (2025): "scrypt with a minimum CPU/memory cost
    /// parameter of (2^17), a minimum block size of 8 (1024 bytes), and a parallelization
    /// parameter of 1": 128 MiB and about a third of a second per password on one core here.
    public static let owasp = ScryptParameters(logN: 17, blockSize: 8, parallelism: 1)

    /// What one derivation holds in memory, in bytes.
    public var memoryBytes: Int { 128 * blockSize << logN }

    public var description: String { "ln=\(logN),r=\(blockSize),p=\(parallelism)" }

    /// Bounds that keep a stored hash from asking for more than 16 GiB or days of work.
    var isWithinBounds: Bool {
        (1...24).contains(logN) && (1...32).contains(blockSize) && (1...16).contains(parallelism)
    }
}

/// A password as stored: scrypt's output over the password and a random salt, with the
/// parameters that made it, in the self-describing form
/// `$scrypt$ln=17,r=8,p=1$<salt>$<hash>` (standard base64 without padding, as in the PHC string
/// format), so the parameters can be raised later and old hashes still verify.
public struct PasswordHash: Sendable, Equatable, CustomStringConvertible {
    public let parameters: ScryptParameters
    let salt: [UInt8]
    let hash: [UInt8]

    static let saltBytes = 16
    static let hashBytes = 32

    init(parameters: ScryptParameters, salt: [UInt8], hash: [UInt8]) {
        self.parameters = parameters
        self.salt = salt
        self.hash = hash
    }

    /// Hashes `password` with a fresh random salt. Takes `parameters`' time and memory: call it
    /// off the caller's executor (the store does).
    public static func make(password: String, parameters: ScryptParameters) throws(ControlError) -> PasswordHash {
        let salt = Secrets.randomBytes(saltBytes)
        return PasswordHash(
            parameters: parameters, salt: salt,
            hash: try Scrypt.derive(Array(password.utf8), salt: salt, parameters: parameters, byteCount: hashBytes))
    }

    /// Parses the stored form; nil if it is not one this Ferry writes.
    public init?(encoded: String) {
        let fields = encoded.split(separator: "$", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0].isEmpty, fields[1] == "scrypt" else { return nil }
        var values: [Substring: Int] = [:]
        for pair in fields[2].split(separator: ",") {
            let parts = pair.split(separator: "=")
            guard parts.count == 2, let value = Int(parts[1]), values[parts[0]] == nil else { return nil }
            values[parts[0]] = value
        }
        guard values.count == 3, let logN = values["ln"], let blockSize = values["r"], let parallelism = values["p"],
            let salt = Secrets.base64Decoded(fields[3]), let hash = Secrets.base64Decoded(fields[4]),
            salt.count >= 8, hash.count >= 16
        else { return nil }
        let parameters = ScryptParameters(logN: logN, blockSize: blockSize, parallelism: parallelism)
        guard parameters.isWithinBounds else { return nil }
        self.init(parameters: parameters, salt: salt, hash: hash)
    }

    public var encoded: String {
        "$scrypt$\(parameters)$\(Secrets.base64Encoded(salt))$\(Secrets.base64Encoded(hash))"
    }

    /// Whether `password` is the one this hash was made from: scrypt again with this hash's
    /// parameters and salt, then a comparison in constant time.
    public func verifies(_ password: String) -> Bool {
        guard
            let candidate = try? Scrypt.derive(
                Array(password.utf8), salt: salt, parameters: parameters, byteCount: hash.count)
        else { return false }
        return Secrets.equalInConstantTime(candidate, hash)
    }

    /// The parameters only: a hash is not for logs.
    public var description: String { "scrypt hash (\(parameters))" }
}

/// What the controller accepts as a password: at least 12 characters (OWASP and NIST SP 800-63B
/// ask for 8 at least, 15 without a second factor; 12 is this cloud's compromise), at most 1024
/// bytes (a bound on the work a login asks for). Any characters; no composition rules.
public enum PasswordPolicy {
    public static let minimumCharacters = 12
    public static let maximumBytes = 1024

    public static func validate(_ password: String, user: String) throws(ControlError) {
        guard password.count >= minimumCharacters, password.utf8.count <= maximumBytes else {
            throw ControlError(
                .invalidArgument,
                "user \(user): a password has \(minimumCharacters) characters at least and \(maximumBytes) bytes at"
                    + " most (got \(password.count) characters): choose a longer passphrase")
        }
    }
}

enum Scrypt {
    static func derive(_ password: [UInt8], salt: [UInt8], parameters: ScryptParameters, byteCount: Int)
        throws(ControlError) -> [UInt8]
    {
        guard parameters.isWithinBounds else {
            throw ControlError(.invalidArgument, "scrypt parameters \(parameters) are out of bounds")
        }
        let n = UInt64(1) << UInt64(parameters.logN)
        let r = UInt64(parameters.blockSize)
        let p = UInt64(parameters.parallelism)
        // OpenSSL needs 128·r·(N + p + 2) bytes (its V and B arrays); a little more is allowed.
        let maximumMemoryBytes = 128 * r * (n + p + 2) + (1 << 16)
        var key = [UInt8](repeating: 0, count: byteCount)
        let status = key.withUnsafeMutableBufferPointer { key in
            ferry_scrypt(
                password, password.count, salt, salt.count, n, r, p, maximumMemoryBytes, key.baseAddress, byteCount)
        }
        guard status == 1 else {
            throw ControlError(
                .invalidArgument,
                "scrypt with \(parameters) failed in libcrypto (\(parameters.memoryBytes) bytes of memory): lower the"
                    + " parameters or give the controller more memory")
        }
        return key
    }
}

/// Random secrets, their digests and comparisons.
public enum Secrets {
    /// Bytes from the system's cryptographic generator (getrandom on Linux).
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// 256 random bits as URL-safe base64 without padding (43 characters): a cookie value, a
    /// CSRF token, the secret part of an API token.
    public static func randomToken() -> String {
        Data(randomBytes(32)).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// The SHA-256 of the token's UTF-8 bytes, in lowercase hex: what the store keeps of a
    /// session or API token.
    static func digest(_ token: String) -> String {
        let bytes = Array(token.utf8)
        var digest = [UInt8](repeating: 0, count: 32)
        let status = digest.withUnsafeMutableBufferPointer { ferry_sha256(bytes, bytes.count, $0.baseAddress) }
        precondition(status == 1, "libcrypto's SHA-256 failed")
        return digest.map { byte in String(format: "%02x", byte) }.joined()
    }

    /// Equal lengths and equal bytes, in time that depends on the length only.
    public static func equalInConstantTime(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && ferry_equal_in_constant_time(a, b, a.count) == 1
    }

    static func base64Encoded(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }

    static func base64Decoded(_ text: Substring) -> [UInt8]? {
        let padded = String(text) + String(repeating: "=", count: (4 - text.utf8.count % 4) % 4)
        return Data(base64Encoded: padded).map { Array($0) }
    }
}
