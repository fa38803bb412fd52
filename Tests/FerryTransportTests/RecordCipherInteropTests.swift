import Crypto
import FerryProtocol
import Foundation
import Testing

@testable import FerryTransport

/// The record layer seals in place with libcrypto; the bytes on the wire must be standard
/// AES-256-GCM and ChaCha20-Poly1305 (RFC 8439) as Protocol.md 9.3 defines them, so that
/// another implementation — here swift-crypto's — seals and opens the same records.
@Suite struct RecordCipherInteropTests {
    @Test(arguments: [RecordCipher.aes256GCM, .chacha20Poly1305])
    func recordsMatchAnotherImplementation(cipher: RecordCipher) throws {
        let key = SymmetricKey(size: .bits256)
        let plaintext = (0..<(64 * 1024 + 7)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let header: [UInt8] = withUnsafeBytes(of: UInt32(plaintext.count).littleEndian) { Array($0) }
        // Record #1 of this direction: nonce = 4 zero bytes ‖ 1 as u64 little-endian.
        let nonce: [UInt8] = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]

        let sealer = RecordKey(cipher: cipher, key: key, seal: true)
        var ours = [UInt8](repeating: 0, count: plaintext.count + RecordKey.tagSize)
        for _ in 0..<2 {  // records #0 and #1: the second checks that the counter advanced the nonce
            try header.withUnsafeBytes { try sealer.begin(header: $0) }
            try plaintext.withUnsafeBytes { source in
                try ours.withUnsafeMutableBytes { target in
                    try sealer.process(from: source.baseAddress!, to: target.baseAddress!, count: plaintext.count)
                    try sealer.seal(tag: target.baseAddress! + plaintext.count)
                }
            }
        }

        let theirs: [UInt8]
        switch cipher {
        case .aes256GCM:
            let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: header)
            theirs = Array(box.ciphertext) + Array(box.tag)
        default:
            let box = try ChaChaPoly.seal(
                plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonce), authenticating: header)
            theirs = Array(box.ciphertext) + Array(box.tag)
        }
        #expect(ours == theirs)

        // And the other way: what swift-crypto sealed opens here, in place; one flipped bit does not.
        let opener = RecordKey(cipher: cipher, key: key, seal: false)
        var zeroth = theirs  // record #0 was sealed with nonce 0 by the sealer above; open #0 first
        try header.withUnsafeBytes { try opener.begin(header: $0) }
        try zeroth.withUnsafeMutableBytes { bytes in
            try opener.process(from: bytes.baseAddress!, to: bytes.baseAddress!, count: plaintext.count)
        }
        #expect(throws: TransportError.self) {
            try zeroth.withUnsafeBytes { try opener.open(tag: $0.baseAddress! + plaintext.count) }
        }
        var first = theirs
        try header.withUnsafeBytes { try opener.begin(header: $0) }
        try first.withUnsafeMutableBytes { bytes in
            try opener.process(from: bytes.baseAddress!, to: bytes.baseAddress!, count: plaintext.count)
            try opener.open(tag: bytes.baseAddress! + plaintext.count)
        }
        #expect(Array(first.prefix(plaintext.count)) == plaintext)

        let tampered = RecordKey(cipher: cipher, key: key, seal: false)
        var flipped = theirs
        flipped[100] ^= 0x04
        _ = try? header.withUnsafeBytes { try tampered.begin(header: $0) }  // #0
        try header.withUnsafeBytes { try tampered.begin(header: $0) }  // #1
        try flipped.withUnsafeMutableBytes { bytes in
            try tampered.process(from: bytes.baseAddress!, to: bytes.baseAddress!, count: plaintext.count)
        }
        #expect(throws: TransportError.self) {
            try flipped.withUnsafeBytes { try tampered.open(tag: $0.baseAddress! + plaintext.count) }
        }
    }
}
