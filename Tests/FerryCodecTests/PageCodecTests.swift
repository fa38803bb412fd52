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
        defer {
            page.deallocate()
            slot.deallocate()
            out.deallocate()
        }
        kind.fill(page, seed: 42)
        out.initializeMemory(as: UInt8.self, repeating: 0xAB)

        let encoder = PageEncoder(pageSize: pageSize, mode: mode)
        let encoded = encoder.encode(page: page.baseAddress!, into: slot.baseAddress!)
        #expect(encoded.hash == PageHash.hash(UnsafeRawBufferPointer(page)))

        switch (kind, mode) {
        case (.zero, _): #expect(encoded.encoding == .zero && encoded.length == 0)
        case (.sparse, _): #expect(encoded.encoding == .words && encoded.length == 8 * SparseWords.bytesPerWord)
        case (.random, _), (_, .none): #expect(encoded.encoding == .raw && encoded.length == pageSize)
        case (.text, .lz4):
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

    /// Without the words codec (a peer that does not decode it) a mostly-zero page is LZ4 or raw.
    @Test(arguments: CompressionMode.allCases)
    func sparsePageWithoutWordsCodec(mode: CompressionMode) throws {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        defer {
            page.deallocate()
            slot.deallocate()
        }
        PageKind.sparse.fill(page, seed: 7)
        let encoder = PageEncoder(pageSize: pageSize, mode: mode, wordsLimit: 0)
        let encoded = encoder.encode(page: page.baseAddress!, into: slot.baseAddress!)
        #expect(encoded.encoding == (mode == .lz4 ? .lz4 : .raw))
        #expect(encoder.encodeInPlace(page: page.baseAddress!, slot: slot.baseAddress!).encoding == .raw)
    }

    /// The words encoding up to its limit, one word past it, in both encoder paths; every word
    /// position (first, last, both ends of a 64-byte block) survives the round trip, also over
    /// memory that is not zero.
    @Test(arguments: [1, 2, 31, 32, 33, 64])
    func wordsUpToTheLimit(words: Int) throws {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        defer {
            page.deallocate()
            slot.deallocate()
            out.deallocate()
        }
        page.initializeMemory(as: UInt8.self, repeating: 0)
        let positions = [0, 511, 7, 8, 63, 64, 255, 256] + (0..<64).map { 9 + $0 * 7 }
        var placed = Set<Int>()
        for index in positions where placed.count < words && !placed.contains(index) {
            placed.insert(index)
            page.storeBytes(of: UInt64(index + 1) << 56 | 0x1234, toByteOffset: index * 8, as: UInt64.self)
        }
        #expect(placed.count == words)
        let limit = 32
        let encoder = PageEncoder(pageSize: pageSize, mode: .none, wordsLimit: limit)
        for inPlace in [false, true] {
            let encoded =
                inPlace
                ? encoder.encodeInPlace(page: page.baseAddress!, slot: slot.baseAddress!)
                : encoder.encode(page: page.baseAddress!, into: slot.baseAddress!)
            #expect(encoded.hash == PageHash.hash(UnsafeRawBufferPointer(page)))
            if words > limit {
                #expect(encoded.encoding == .raw, "\(words) words, limit \(limit)")
                continue
            }
            #expect(encoded.encoding == .words && encoded.length == words * SparseWords.bytesPerWord)
            out.initializeMemory(as: UInt8.self, repeating: 0xC3)
            let payload = UnsafeRawBufferPointer(rebasing: slot[0..<encoded.length])
            let hash = try PageDecoder(pageSize: pageSize).decode(
                encoding: .words, payload: payload, into: out.baseAddress!)
            #expect(hash == encoded.hash)
            #expect(memcmp(out.baseAddress!, page.baseAddress!, pageSize) == 0)
        }
    }

    /// Malformed words payloads are refused before anything is written.
    @Test func wordsDecoderRejectsMalformedPayloads() throws {
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 64)
        defer { out.deallocate() }
        func record(_ index: UInt16, _ word: UInt64) -> [UInt8] {
            withUnsafeBytes(of: index.littleEndian) { Array($0) } + withUnsafeBytes(of: word.littleEndian) { Array($0) }
        }
        let cases: [(String, [UInt8], CodecError.Code)] = [
            ("empty", [], .badLength),
            ("not a whole record", record(1, 5) + [0], .badLength),
            ("a page's worth", (0..<410).flatMap { record(UInt16($0), 1) }, .badLength),
            ("index past the page", record(512, 5), .badPayload),
            ("indices not increasing", record(9, 5) + record(9, 6), .badPayload),
            ("indices going down", record(9, 5) + record(3, 6), .badPayload),
            ("zero word", record(1, 5) + record(2, 0), .badPayload),
        ]
        let decoder = PageDecoder(pageSize: pageSize)
        for (name, bytes, code) in cases {
            out.initializeMemory(as: UInt8.self, repeating: 0x77)
            bytes.withUnsafeBytes { payload in
                let error = #expect(throws: CodecError.self, "\(name)") {
                    _ = try decoder.decode(encoding: .words, payload: payload, into: out.baseAddress!)
                }
                #expect(error?.code == code, "\(name): \(String(describing: error))")
            }
            #expect(out.allSatisfy { $0 == 0x77 }, "\(name): memory written before the payload was checked")
        }
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
        _ = try decoder.decode(
            encoding: .zero, payload: UnsafeRawBufferPointer(start: nil, count: 0),
            into: out.baseAddress!, destinationIsZero: true)
        #expect(out[0] == 0x5A)
        _ = try decoder.decode(
            encoding: .zero, payload: UnsafeRawBufferPointer(start: nil, count: 0),
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
