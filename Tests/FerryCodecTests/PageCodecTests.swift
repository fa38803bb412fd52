import FerryProtocol
import Glibc
import Testing

@testable import FerryCodec

/// Page contents of each class the image generator produces.
enum PageKind: String, CaseIterable, Sendable {
    case zero, sparse, text, random

    func fill(_ page: UnsafeMutableRawBufferPointer, seed: UInt64) {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &+ 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        page.initializeMemory(as: UInt8.self, repeating: 0)
        switch self {
        case .zero:
            break
        case .sparse:
            for _ in 0..<8 {
                let offset = Int(next() % UInt64(page.count / 8)) * 8
                page.storeBytes(of: next(), toByteOffset: offset, as: UInt64.self)
            }
        case .text:
            let words = ["ferry ", "page ", "migrate ", "guest ", "memory ", "dirty ", "round "]
            var offset = 0
            while offset < page.count {
                for byte in words[Int(next() % UInt64(words.count))].utf8 where offset < page.count {
                    page[offset] = byte
                    offset += 1
                }
            }
        case .random:
            for offset in stride(from: 0, to: page.count, by: 8) {
                page.storeBytes(of: next(), toByteOffset: offset, as: UInt64.self)
            }
        }
    }
}

@Suite struct PageCodecTests {
    let pageSize = 4096

    @Test(arguments: PageKind.allCases, CompressionMode.allCases)
    func roundTrip(kind: PageKind, mode: CompressionMode) throws {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        defer { page.deallocate(); slot.deallocate(); out.deallocate() }
        kind.fill(page, seed: 42)
        out.initializeMemory(as: UInt8.self, repeating: 0xAB)

        let encoder = PageEncoder(pageSize: pageSize, mode: mode)
        let encoded = encoder.encode(page: page.baseAddress!, into: slot.baseAddress!)
        #expect(encoded.hash == PageHash.hash(UnsafeRawBufferPointer(page)))

        switch (kind, mode) {
        case (.zero, _): #expect(encoded.encoding == .zero && encoded.length == 0)
        case (.random, _), (_, .none): #expect(encoded.encoding == .raw && encoded.length == pageSize)
        case (.sparse, .lz4), (.text, .lz4):
            #expect(encoded.encoding == .lz4)
            #expect(encoded.length < pageSize / 2)
        }

        let decoder = PageDecoder(pageSize: pageSize)
        let hash = try decoder.decode(
            encoding: encoded.encoding,
            payload: UnsafeRawBufferPointer(rebasing: slot[0..<encoded.length]),
            into: out.baseAddress!)
        #expect(hash == encoded.hash)
        #expect(memcmp(out.baseAddress!, page.baseAddress!, pageSize) == 0)
    }

    @Test func zeroDetectionFindsASingleByteAnywhere() {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        defer { page.deallocate() }
        page.initializeMemory(as: UInt8.self, repeating: 0)
        #expect(PageEncoder.isZero(page.baseAddress!, count: pageSize))
        for offset in [0, 1, 63, 64, 2047, 4095] {
            page[offset] = 1
            #expect(!PageEncoder.isZero(page.baseAddress!, count: pageSize), "byte \(offset)")
            page[offset] = 0
        }
    }

    @Test func decoderRejectsMalformedPayloads() {
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        defer { out.deallocate() }
        let decoder = PageDecoder(pageSize: pageSize)
        let junk = [UInt8](repeating: 0xFF, count: 100)
        junk.withUnsafeBytes { bytes in
            #expect(throws: CodecError.self) {
                _ = try decoder.decode(encoding: .lz4, payload: bytes, into: out.baseAddress!)
            }
            #expect(throws: CodecError.self) {
                _ = try decoder.decode(encoding: .raw, payload: bytes, into: out.baseAddress!)
            }
            #expect(throws: CodecError.self) {
                _ = try decoder.decode(encoding: .zero, payload: bytes, into: out.baseAddress!)
            }
        }
        // A valid LZ4 block of a shorter page is rejected: it must produce exactly one page.
        let short = [UInt8](repeating: 7, count: 1000)
        var block = [UInt8](repeating: 0, count: 2000)
        let written = short.withUnsafeBytes { src in
            block.withUnsafeMutableBytes { dst in
                LZ4Probe.compress(src, into: dst)
            }
        }
        _ = block[0..<written].withUnsafeBytes { bytes in
            #expect(throws: CodecError.self) {
                _ = try decoder.decode(encoding: .lz4, payload: bytes, into: out.baseAddress!)
            }
        }
    }

    @Test func zeroPageOverKnownZeroMemoryIsNotWritten() throws {
        // With destinationIsZero the decoder must not touch the page (keeps sparse images sparse).
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        defer { out.deallocate() }
        out.initializeMemory(as: UInt8.self, repeating: 0x5A)
        let decoder = PageDecoder(pageSize: pageSize)
        _ = try decoder.decode(encoding: .zero, payload: UnsafeRawBufferPointer(start: nil, count: 0),
                               into: out.baseAddress!, destinationIsZero: true)
        #expect(out[0] == 0x5A)
        _ = try decoder.decode(encoding: .zero, payload: UnsafeRawBufferPointer(start: nil, count: 0),
                               into: out.baseAddress!)
        #expect(out.allSatisfy { $0 == 0 })
    }

    @Test func digestIsOverLittleEndianHashTable() {
        let table: [UInt64] = [1, 2, 0xFFFF_FFFF_FFFF_FFFF]
        var bytes: [UInt8] = []
        for value in table { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        let expected = bytes.withUnsafeBytes { PageHash.hash($0) }
        #expect(table.withUnsafeBufferPointer { PageHash.digest(ofHashTable: $0) } == expected)
        #expect(expected != 0)
    }
}
