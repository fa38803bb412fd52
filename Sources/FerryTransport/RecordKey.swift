import CAEAD
import Crypto
import FerryProtocol
import Foundation

/// One direction's AEAD key and its record counter (Protocol.md 9.3): nonce = 4 zero bytes ‖
/// the record number (u64, little-endian), so with a fresh key per connection and direction a
/// nonce is never used twice. Sealing fails for good before the counter could wrap.
///
/// Records are sealed and opened in place with libcrypto's EVP interface (`CAEAD`), one context
/// per direction, set up once: no allocation or extra copy per record. (swift-crypto's
/// `AES.GCM.seal` returns a freshly allocated `Data` per call and copies it once more inside:
/// about half of the record layer's CPU in a profile.) The key derivation stays swift-crypto's.
///
/// Not thread-safe: each direction of a connection is used by one thread.
final class RecordKey {
    let cipher: RecordCipher
    private let context: OpaquePointer
    private(set) var counter: UInt64 = 0
    private var nonce = [UInt8](repeating: 0, count: RecordKey.nonceSize)
    /// Largest plaintext of one record a receiver accepts (Protocol.md 9.3).
    static let maxRecordPayload = 256 * 1024
    /// Plaintext of the records this side seals: large enough that the per-record costs (a
    /// header, a tag, one `sendmsg`) stay small, small enough to stay in cache while sealed.
    static let sealedRecordPayload = 64 * 1024
    static let tagSize = 16
    static let nonceSize = 12
    static let headerSize = 4

    /// `seal`: this side encrypts with the key (else it opens).
    init(cipher: RecordCipher, key: SymmetricKey, seal: Bool) {
        precondition(cipher != .none, "a record key needs a cipher")
        self.cipher = cipher
        let made = key.withUnsafeBytes { bytes in
            ferry_aead_new(
                cipher == .aes256GCM ? Int32(FERRY_AEAD_AES_256_GCM) : Int32(FERRY_AEAD_CHACHA20_POLY1305),
                bytes.bindMemory(to: UInt8.self).baseAddress, seal ? 1 : 0)
        }
        guard let made else { preconditionFailure("libcrypto refused a \(cipher) context for a 32-byte key") }
        context = made
    }

    /// Derives one direction's key from the shared key and the handshake (Protocol.md 9.2).
    convenience init(
        shared: SymmetricKey, cipher: RecordCipher, hello: AuthHello, challenge: AuthChallenge,
        clientToServer: Bool, seal: Bool
    ) {
        let derived = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: shared,
            salt: AuthTranscript.keySalt(hello: hello, challenge: challenge),
            info: AuthTranscript.keyInfo(clientToServer: clientToServer, cipher: cipher),
            outputByteCount: 32)
        self.init(cipher: cipher, key: derived, seal: seal)
    }

    deinit { ferry_aead_free(context) }

    /// Starts the next record with `header` (its length field) as associated data.
    func begin(header: UnsafeRawBufferPointer) throws(TransportError) {
        guard counter < UInt64.max else {
            throw TransportError(.io, "this connection has sealed 2^64 - 1 records: its nonces are used up; reconnect")
        }
        for index in 0..<8 { nonce[4 + index] = UInt8(truncatingIfNeeded: counter >> (8 * index)) }
        counter += 1
        let ok = nonce.withUnsafeBufferPointer { nonce in
            ferry_aead_begin(context, nonce.baseAddress, header.bindMemory(to: UInt8.self).baseAddress, header.count)
        }
        guard ok == 1 else {
            throw TransportError(.io, "starting record #\(counter - 1) with \(cipher) failed in libcrypto")
        }
    }

    /// Encrypts (sealing) or decrypts (opening) `count` bytes from `source` to `target`, which
    /// may be the same place.
    func process(from source: UnsafeRawPointer, to target: UnsafeMutableRawPointer, count: Int) throws(TransportError) {
        guard
            ferry_aead_update(
                context, target.assumingMemoryBound(to: UInt8.self),
                source.assumingMemoryBound(to: UInt8.self), count) == 1
        else {
            throw TransportError(.io, "\(cipher) failed in libcrypto on record #\(counter - 1)")
        }
    }

    /// Ends a sealed record, writing its 16-byte tag to `tag`.
    func seal(tag: UnsafeMutableRawPointer) throws(TransportError) {
        guard ferry_aead_seal_end(context, tag.assumingMemoryBound(to: UInt8.self)) == 1 else {
            throw TransportError(.io, "sealing record #\(counter - 1) with \(cipher) failed in libcrypto")
        }
    }

    /// Ends an opened record: throws unless `tag` authenticates it.
    func open(tag: UnsafeRawPointer) throws(TransportError) {
        guard ferry_aead_open_end(context, tag.assumingMemoryBound(to: UInt8.self)) == 1 else {
            throw TransportError(
                .decryption,
                "decryption failed for record #\(counter - 1): the data was altered in flight or the peers' keys differ"
            )
        }
    }
}
