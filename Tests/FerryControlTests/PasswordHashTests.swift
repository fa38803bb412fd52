import Testing

@testable import FerryControl

@Suite struct PasswordHashTests {
    private static func hex(_ text: String) -> [UInt8] {
        let digits = Array(text.filter { !$0.isWhitespace })
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
    }

    /// RFC 7914 section 12, the first two vectors (the others need 16 MiB and 1 GiB).
    @Test func scryptMatchesRFC7914() throws {
        let empty = try Scrypt.derive(
            [], salt: [], parameters: ScryptParameters(logN: 4, blockSize: 1, parallelism: 1), byteCount: 64)
        #expect(
            empty
                == Self.hex(
                    "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
                        + "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"))
        let nacl = try Scrypt.derive(
            Array("password".utf8), salt: Array("NaCl".utf8),
            parameters: ScryptParameters(logN: 10, blockSize: 8, parallelism: 16), byteCount: 64)
        #expect(
            nacl
                == Self.hex(
                    "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
                        + "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"))
    }

    @Test func aHashVerifiesItsPasswordOnlyAndSurvivesItsEncoding() throws {
        let parameters = ScryptParameters(logN: 10, blockSize: 8, parallelism: 1)
        let hash = try PasswordHash.make(password: "correct horse battery", parameters: parameters)
        let decoded = try #require(PasswordHash(encoded: hash.encoded))
        #expect(decoded == hash && decoded.parameters == parameters)
        #expect(hash.encoded.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        #expect(decoded.verifies("correct horse battery"))
        #expect(!decoded.verifies("correct horse batterz"))
        #expect(PasswordHash(encoded: "$scrypt$ln=40,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA") == nil)
        #expect(PasswordHash(encoded: "plain") == nil)
    }

    @Test func tokenDigestsAreSHA256() {
        #expect(Secrets.digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Secrets.randomToken().count == 43 && Secrets.randomToken() != Secrets.randomToken())
    }
}
