import Crypto
import FerryProtocol
import Foundation

/// One direction's AEAD key and its record counter (Protocol.md 9.3): nonce = 4 zero bytes ‖
/// the record number (u64, little-endian), so with a fresh key per connection and direction a
/// nonce is never used twice. Sealing fails for good before the counter could wrap.
///
/// Not thread-safe: each direction of a connection is used by one thread.
struct RecordKey {
    let cipher: RecordCipher
    private let key: SymmetricKey
    private(set) var counter: UInt64 = 0
    /// Largest plaintext of one record a receiver accepts (Protocol.md 9.3).
    static let maxRecordPayload = 256 * 1024
    /// Plaintext of the records this side seals. Smaller than the maximum on purpose:
    /// swift-crypto allocates each record's output with malloc, and glibc serves blocks of
    /// 128 KiB and more with fresh mmaps (or trims them back to the kernel), so 256 KiB records
    /// cost 64 page faults each: seal/open ran at ~0.45 GB/s of CPU with 256 KiB records and at
    /// ~2.4 GB/s with 64 KiB ones (`microbench --filter seal,open`, AES-256-GCM).
    static let sealedRecordPayload = 64 * 1024
    static let tagSize = 16
    static let nonceSize = 12
    static let headerSize = 4

    init(cipher: RecordCipher, key: SymmetricKey) {
        precondition(cipher != .none, "a record key needs a cipher")
        self.cipher = cipher
        self.key = key
    }

    /// Derives one direction's key from the shared key and the handshake (Protocol.md 9.2).
    init(shared: SymmetricKey, cipher: RecordCipher, hello: AuthHello, challenge: AuthChallenge, clientToServer: Bool) {
        let derived = HKDF<SHA256>.deriveKey(inputKeyMaterial: shared,
                                            salt: AuthTranscript.keySalt(hello: hello, challenge: challenge),
                                            info: AuthTranscript.keyInfo(clientToServer: clientToServer, cipher: cipher),
                                            outputByteCount: 32)
        self.init(cipher: cipher, key: derived)
    }

    private mutating func nextNonce() throws(TransportError) -> [UInt8] {
        guard counter < UInt64.max else {
            throw TransportError(.io, "this connection has sealed 2^64 - 1 records: its nonces are used up; reconnect")
        }
        var nonce = [UInt8](repeating: 0, count: Self.nonceSize)
        for index in 0..<8 { nonce[4 + index] = UInt8(truncatingIfNeeded: counter >> (8 * index)) }
        counter += 1
        return nonce
    }

    /// Seals `plaintext` with `header` (the record's length field) as associated data; returns
    /// nonce ‖ ciphertext ‖ tag.
    mutating func seal(_ plaintext: UnsafeRawBufferPointer, header: UnsafeRawBufferPointer) throws(TransportError) -> Data {
        let nonce = try nextNonce()
        do {
            switch cipher {
            case .aes256GCM:
                return try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: header).combined!
            case .chacha20Poly1305:
                return try ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonce), authenticating: header).combined
            case .none:
                preconditionFailure("no cipher")
            }
        } catch {
            throw TransportError(.io, "sealing a record with \(cipher) failed: \(error)")
        }
    }

    /// Opens `combined` (nonce slot of 12 bytes, to be filled here, ‖ ciphertext ‖ tag).
    mutating func open(_ combined: inout Data, header: UnsafeRawBufferPointer) throws(TransportError) -> Data {
        let nonce = try nextNonce()
        combined.replaceSubrange(0..<Self.nonceSize, with: nonce)
        do {
            switch cipher {
            case .aes256GCM:
                return try AES.GCM.open(AES.GCM.SealedBox(combined: combined), using: key, authenticating: header)
            case .chacha20Poly1305:
                return try ChaChaPoly.open(ChaChaPoly.SealedBox(combined: combined), using: key, authenticating: header)
            case .none:
                preconditionFailure("no cipher")
            }
        } catch {
            throw TransportError(.decryption, "decryption failed for record #\(counter - 1): the data was altered in flight or the peers' keys differ")
        }
    }
}
