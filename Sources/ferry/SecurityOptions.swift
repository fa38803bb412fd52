import ArgumentParser
import FerryMigration
import FerryProtocol
import FerryTransport

/// `--key-file` and the encryption switches of `ferry send` and `ferry receive` (Protocol.md section 9).
struct SecurityOptions: ParsableArguments {
    @Option(
        name: .customLong("key-file"),
        help: ArgumentHelp(
            "Shared secret: a file of exactly 64 hex digits or 32 raw bytes, not all zero, mode 0600 (make one with `ferry keygen`). Both sides must use the same key: each proves it holds it before anything else is exchanged.",
            valueName: "path"))
    var keyFile: String?

    @Flag(
        help:
            "Encrypt every connection (AES-256-GCM or ChaCha20-Poly1305, session keys from the handshake). Needs --key-file."
    )
    var encrypt = false

    @Option(
        help: ArgumentHelp(
            "With --encrypt: auto (AES-256-GCM when the CPU has AES instructions, else ChaCha20-Poly1305), aes-256-gcm or chacha20-poly1305.",
            valueName: "name"))
    var cipher = "auto"

    /// A cipher that does not exist, or encryption without a key, is a usage error (exit 2); the
    /// key file's contents and mode are checked when it is read (exit 9).
    func validate() throws {
        try Self.validate(keyFile: keyFile, encrypt: encrypt, cipher: cipher, encryptFlag: "--encrypt")
    }

    static func validate(keyFile: String?, encrypt: Bool, cipher: String, encryptFlag: String) throws {
        if cipher != "auto" && (RecordCipher(name: cipher) ?? RecordCipher.none) == .none {
            throw ValidationError("--cipher \(cipher): use auto, aes-256-gcm or chacha20-poly1305")
        }
        if encrypt && keyFile == nil {
            throw ValidationError(
                "\(encryptFlag) needs --key-file: the session keys are derived from the shared key (make one with ferry keygen)"
            )
        }
    }

    func make() throws -> ConnectionSecurity {
        try Self.make(keyFile: keyFile, encrypt: encrypt, cipher: cipher, encryptFlag: "--encrypt")
    }

    /// The library's settings; `encryptFlag`: how the command names its encryption switch.
    static func make(keyFile: String?, encrypt: Bool, cipher: String, encryptFlag: String) throws -> ConnectionSecurity
    {
        let ciphers: [RecordCipher]
        if cipher == "auto" {
            ciphers = RecordCipher.preferredOrder
        } else if let named = RecordCipher(name: cipher), named != .none {
            ciphers = [named]
        } else {
            throw CommandError.configuration("--cipher \(cipher): use auto, aes-256-gcm or chacha20-poly1305")
        }
        guard let keyFile else {
            if encrypt {
                throw CommandError.configuration(
                    "\(encryptFlag) needs --key-file: the session keys are derived from the shared key")
            }
            return .none
        }
        do throws(TransportError) {
            return ConnectionSecurity(key: try SharedKey.load(path: keyFile), encrypt: encrypt, ciphers: ciphers)
        } catch {
            throw CommandError.configuration(error.message)
        }
    }
}

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Write a new random key for --key-file (32 bytes as 64 hex digits, mode 0600).",
        discussion: "Copy the file to the other host over a channel you trust (e.g. scp) and keep it mode 0600 there.")

    @Option(help: ArgumentHelp("The key file to create.", valueName: "path"))
    var out: String

    @Flag(help: "Replace an existing file.")
    var force = false

    func run() throws {
        runReportingErrors {
            do throws(TransportError) {
                try SharedKey.generate(path: out, overwrite: force)
            } catch {
                throw CommandError.configuration(error.message)
            }
            Terminal.note("wrote a new key to \(out) (mode 0600)")
        }
    }
}
