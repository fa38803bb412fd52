import FerryProtocol
import Testing

/// Decoding `bytes` as `M` must fail with `code`.
func expectRejected<M: FrameMessage>(
    _: M.Type, _ bytes: [UInt8], _ code: ProtocolError.Code, sourceLocation: SourceLocation = #_sourceLocation
) {
    let error = #expect(throws: ProtocolError.self, sourceLocation: sourceLocation) {
        _ = try bytes.withUnsafeBytes { try M(payload: $0) }
    }
    #expect(error?.code == code, "\(error?.description ?? "no error")", sourceLocation: sourceLocation)
    #expect(error?.message.isEmpty == false, sourceLocation: sourceLocation)
}

func helloPayload(_ edit: (inout Hello) -> Void = { _ in }) -> [UInt8] {
    var hello = Hello(pageSize: 4096, pageCount: 1024, vcpuCount: 4, sourceName: "s")
    edit(&hello)
    // Bypasses encode's own validation: write the fields by hand.
    var out = Hello.magic
    func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    le(hello.versionMin)
    le(hello.versionMax)
    le(hello.pageSize)
    le(hello.pageCount)
    le(hello.codecs.rawValue)
    le(hello.cpuStateFormat)
    le(hello.guestKind)
    le(hello.vcpuCount)
    le(hello.streamCount)
    le(UInt16(0))
    le(UInt16(hello.sourceName.utf8.count))
    out += hello.sourceName.utf8
    le(UInt16(hello.guestName.utf8.count))
    out += hello.guestName.utf8
    return out
}

@Suite("Messages rejected")
struct MessageRejectionTests {
    @Test(arguments: messageSamples)
    func everyTruncationIsRejected(_ sample: MessageSample) {
        // A GUEST_ATTACHMENT's bytes run to the end of its frame: a cut after its offset is a
        // shorter chunk (its offsets are checked against GUEST_CONFIG's length, not here).
        let cuts = sample.type == .guestAttachment ? 8 : sample.payload.count
        for cut in 0..<cuts {
            let prefix = Array(sample.payload[..<cut])
            let error = #expect(throws: ProtocolError.self, "\(sample) cut at \(cut)") {
                _ = try prefix.withUnsafeBytes { try sample.decode($0) }
            }
            let expected: ProtocolError.Code = sample.type == .hello && cut < 8 ? .badMagic : .truncated
            #expect(error?.code == expected, "\(sample) cut at \(cut): \(error?.description ?? "")")
        }
    }

    @Test(arguments: messageSamples)
    func trailingBytesAreRejected(_ sample: MessageSample) {
        // A GUEST_ATTACHMENT has no trailing bytes: they are more of its chunk.
        guard sample.type != .guestAttachment else { return }
        for extra: [UInt8] in [[0], [1, 2, 3]] {
            let bytes = sample.payload + extra
            let error = #expect(throws: ProtocolError.self) {
                _ = try bytes.withUnsafeBytes { try sample.decode($0) }
            }
            #expect(error?.code == .trailingBytes, "\(error?.description ?? "")")
        }
    }

    @Test func helloNeedsTheMagic() {
        var bytes = helloPayload()
        bytes[7] = 0x48  // FERRYMIH
        expectRejected(Hello.self, bytes, .badMagic)
        expectRejected(Hello.self, Array("GET / HTTP/1.1\r\n".utf8), .badMagic)
        expectRejected(Hello.self, [], .badMagic)
    }

    @Test func helloFieldsAreChecked() {
        let cases: [(String, (inout Hello) -> Void, ProtocolError.Code)] = [
            ("vcpu 0", { $0.vcpuCount = 0 }, .invalidField),
            ("vcpu 65", { $0.vcpuCount = 65 }, .invalidField),
            ("page 2048", { $0.pageSize = 2048 }, .invalidField),
            ("page 5000", { $0.pageSize = 5000 }, .invalidField),
            ("page 128 KiB", { $0.pageSize = 131_072 }, .invalidField),
            ("page 0", { $0.pageSize = 0 }, .invalidField),
            ("no pages", { $0.pageCount = 0 }, .invalidField),
            ("image 2^63", { $0.pageCount = 1 << 51 }, .invalidField),
            ("image overflows", { $0.pageCount = .max }, .invalidField),
            ("no raw", { $0.codecs = [.zero, .lz4] }, .invalidField),
            ("no zero", { $0.codecs = [.raw] }, .invalidField),
            ("version 0", { $0.versionMin = 0 }, .invalidField),
            (
                "min > max",
                {
                    $0.versionMin = 3
                    $0.versionMax = 2
                }, .invalidField
            ),
            ("long name", { $0.sourceName = String(repeating: "x", count: 256) }, .tooLarge),
            ("no streams", { $0.streamCount = 0 }, .invalidField),
            ("17 streams", { $0.streamCount = 17 }, .invalidField),
            ("guest path", { $0.guestName = "../etc/passwd" }, .invalidField),
            ("guest slash", { $0.guestName = "a/b" }, .invalidField),
            ("guest hidden", { $0.guestName = ".img" }, .invalidField),
            ("guest space", { $0.guestName = "a b" }, .invalidField),
            ("guest NUL", { $0.guestName = "a\u{0}b" }, .invalidField),
            ("guest UTF-8", { $0.guestName = "gäst" }, .invalidField),
            ("guest 65", { $0.guestName = String(repeating: "g", count: 65) }, .tooLarge),
        ]
        for (name, edit, code) in cases {
            let bytes = helloPayload(edit)
            let error = #expect(throws: ProtocolError.self, "\(name)") {
                _ = try bytes.withUnsafeBytes { try Hello(payload: $0) }
            }
            #expect(error?.code == code, "\(name): \(error?.description ?? "")")
        }
        // The edges that are allowed.
        for edit: (inout Hello) -> Void in [
            { $0.vcpuCount = 64 }, { $0.pageSize = 65536 }, { $0.pageCount = (1 << 51) - 1 },
            { $0.sourceName = String(repeating: "x", count: 255) }, { $0.codecs = CodecSet(rawValue: 0x13) },
            { $0.streamCount = 16 }, { $0.guestName = "vm-1.test_2" },
            { $0.guestName = String(repeating: "g", count: 64) },
        ] {
            let bytes = helloPayload(edit)
            #expect(throws: Never.self) { _ = try bytes.withUnsafeBytes { try Hello(payload: $0) } }
        }
    }

    @Test func reservedBytesMustBeZero() {
        // (sample, offset of a reserved byte)
        let cases: [(String, Int)] = [
            ("HELLO", 38), ("HELLO", 39), ("ACCEPT", 2), ("JOIN", 26), ("JOIN", 31), ("RESUME", 36), ("RESUME", 39),
            ("STREAM_ROUND_END", 4), ("REFUSE", 3), ("GUEST_CONFIG", 14),
            ("GUEST_CONFIG", 22), ("GUEST_CONFIG", 23), ("ROUND_END", 4), ("ROUND_END", 55), ("ROUND_ACK", 7),
            ("COMPLETE", 4), ("VERIFIED ok", 1), ("VERIFIED ok", 7), ("ABORT", 2),
            ("DEVICE_STATE", 2), ("DEVICE_STATE", 7), ("DEVICE_STATE", 8 + 12), ("DEVICE_STATE", 8 + 80 + 15),
            ("STATUS awaiting commit", 5), ("STATUS awaiting commit", 7), ("STATUS awaiting commit", 36),
            ("STATUS awaiting commit", 39), ("STATUS_QUERY by session", 28), ("STATUS_QUERY by session", 31),
            ("AUTH_HELLO", 36), ("AUTH_HELLO", 39), ("AUTH_CHALLENGE", 34), ("AUTH_CHALLENGE", 39),
        ]
        for (name, offset) in cases {
            let sample = messageSamples.first { $0.name == name }!
            var bytes = sample.payload
            bytes[offset] = 0x01
            let error = #expect(throws: ProtocolError.self, "\(name) byte \(offset)") {
                _ = try bytes.withUnsafeBytes { try sample.decode($0) }
            }
            #expect(error?.code == .invalidField, "\(name) byte \(offset): \(error?.description ?? "")")
        }
    }

    @Test(
        arguments: [
            [0xFF], [0xC3, 0x28], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0x61, 0xE2, 0x82],
        ] as [[UInt8]])
    func invalidUTF8IsRejected(_ text: [UInt8]) {
        let str16 = [UInt8(text.count), 0] + text
        expectRejected(Note.self, str16, .invalidField)
        expectRejected(Abort.self, [1, 0, 0, 0] + str16, .invalidField)
        var hello = helloPayload { $0.sourceName = "" }
        hello.removeLast(2)
        expectRejected(Hello.self, hello + str16, .invalidField)
    }

    @Test func stringLimitsAreEnforced() {
        let long = [UInt8](repeating: 0x61, count: 1025)
        expectRejected(Refuse.self, [1, 0, 0, 0, 0x01, 0x04] + long, .tooLarge)
        expectRejected(Abort.self, [1, 0, 0, 0, 0x01, 0x04] + long, .tooLarge)
        // A length larger than the payload is truncation, checked before reading.
        expectRejected(Note.self, [0x00, 0x01, 0x61], .truncated)
        expectRejected(Note.self, [0xFF, 0x0F] + [UInt8](repeating: 0x61, count: 4095), .tooLarge)
        var config = messageSamples.first { $0.name == "GUEST_CONFIG empty" }!.payload
        config.removeLast(18)  // workload "", attachment_length and attachment_xxh3
        expectRejected(GuestConfig.self, config + [0x01, 0x04] + long, .tooLarge)
        // attachment_length over 2^40 (1 TiB); a hash without an attachment; a missing hash.
        let tooLong: [UInt8] = [1, 0, 0, 0, 0, 1, 0, 0]
        expectRejected(GuestConfig.self, config + [0, 0] + tooLong + [UInt8](repeating: 0, count: 8), .tooLarge)
        let noLength = [UInt8](repeating: 0, count: 8)
        expectRejected(GuestConfig.self, config + [0, 0] + noLength + [1, 0, 0, 0, 0, 0, 0, 0], .invalidField)
        expectRejected(GuestConfig.self, config + [0, 0] + [0x10, 0, 0, 0, 0, 0, 0, 0], .truncated)
        // GUEST_ATTACHMENT: no bytes, or more than 1 MiB.
        expectRejected(GuestAttachmentChunk.self, [UInt8](repeating: 0, count: 8), .invalidField)
        expectRejected(GuestAttachmentChunk.self, [UInt8](repeating: 0, count: 8 + (1 << 20) + 1), .invalidField)
        expectRejected(GuestAttachmentChunk.self, [0, 0, 0], .truncated)
    }

    @Test func otherFieldRules() {
        var verified = messageSamples.first { $0.name == "VERIFIED ok" }!.payload
        verified[0] = 2
        expectRejected(Verified.self, verified, .invalidField)

        var roundEnd = messageSamples.first { $0.name == "ROUND_END" }!.payload
        roundEnd[48] = 100
        expectRejected(RoundEnd.self, roundEnd, .invalidField)

        var complete = messageSamples.first { $0.name == "COMPLETE" }!.payload
        for i in 8..<16 { complete[i] = 0 }
        expectRejected(Complete.self, complete, .invalidField)

        var accept = messageSamples.first { $0.name == "ACCEPT" }!.payload
        accept[4] = 0x05  // zero + lz4, no raw
        expectRejected(Accept.self, accept, .invalidField)
        accept[4] = 0x07
        accept[0] = 0
        expectRejected(Accept.self, accept, .invalidField)

        // STATUS: a state beyond 4, an index not below total, total 0; names are guest names.
        var status = messageSamples.first { $0.name == "STATUS awaiting commit" }!.payload
        status[4] = 5
        expectRejected(Status.self, status, .invalidField)
        status[4] = 2
        status[0] = 3
        expectRejected(Status.self, status, .invalidField)
        status[0] = 0
        status[2] = 0
        expectRejected(Status.self, status, .invalidField)
        let noFlags: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0]
        let noToken = [UInt8](repeating: 0, count: 16)
        expectRejected(
            StatusQuery.self, [0, 0, 0, 0, 0, 0, 0, 0] + noToken + noFlags + [4, 0] + Array("../x".utf8), .invalidField)
        // A resolve query without a session.
        expectRejected(
            StatusQuery.self, [0, 0, 0, 0, 0, 0, 0, 0] + noToken + [1, 0, 0, 0, 0, 0, 0, 0, 0, 0], .invalidField)
        // An unknown flag.
        expectRejected(
            StatusQuery.self, [7, 0, 0, 0, 0, 0, 0, 0] + noToken + [2, 0, 0, 0, 0, 0, 0, 0, 0, 0], .invalidField)
        // A reserved byte set.
        expectRejected(
            StatusQuery.self, [7, 0, 0, 0, 0, 0, 0, 0] + noToken + [0, 0, 0, 0, 1, 0, 0, 0, 0, 0], .invalidField)
    }

    /// ACCEPT, JOIN and RESUME carry a session token that is never all zero (version 4).
    @Test func sessionTokensAreNeverZero() {
        var accept = messageSamples.first { $0.name == "ACCEPT" }!.payload
        for i in 32..<48 { accept[i] = 0 }
        expectRejected(Accept.self, accept, .invalidField)
        var join = messageSamples.first { $0.name == "JOIN" }!.payload
        for i in 8..<24 { join[i] = 0 }
        expectRejected(Join.self, join, .invalidField)
        var resume = messageSamples.first { $0.name == "RESUME" }!.payload
        for i in 8..<24 { resume[i] = 0 }
        expectRejected(Resume.self, resume, .invalidField)
        // JOIN's reserved bytes follow stream_index.
        join = messageSamples.first { $0.name == "JOIN" }!.payload
        join[27] = 1
        expectRejected(Join.self, join, .invalidField)
    }

    @Test func deviceStateShapeIsChecked() {
        func section(_ kind: UInt16, _ version: UInt16, _ instance: UInt32, _ length: UInt32, body: Int? = nil)
            -> [UInt8]
        {
            var out: [UInt8] = [kind.lo, kind.hi, version.lo, version.hi]
            withUnsafeBytes(of: instance.littleEndian) { out += $0 }
            withUnsafeBytes(of: length.littleEndian) { out += $0 }
            return out + [0, 0, 0, 0] + [UInt8](repeating: 0, count: body ?? Int(length))
        }
        func state(_ sections: [[UInt8]], count: UInt16? = nil) -> [UInt8] {
            let n = count ?? UInt16(sections.count)
            return [n.lo, n.hi, 0, 0, 0, 0, 0, 0] + sections.flatMap { $0 }
        }
        let vcpus = (0..<64).map { section(1, 1, UInt32($0), 64) }
        #expect(throws: Never.self) { _ = try state(vcpus).withUnsafeBytes { try DeviceState(payload: $0) } }
        #expect(throws: Never.self) {
            _ = try state([section(1, 2, 0, 8), section(0x100, 1, 0, 0), section(0x8001, 4, 3, 2)]).withUnsafeBytes {
                try DeviceState(payload: $0)
            }
        }
        expectRejected(DeviceState.self, state([]), .invalidField)  // no section
        expectRejected(DeviceState.self, state(vcpus + [section(1, 1, 64, 64)]), .invalidField)  // 65 vCPUs
        expectRejected(DeviceState.self, state([section(0x100, 1, 0, 4)]), .invalidField)  // no vCPU
        expectRejected(DeviceState.self, state([section(1, 1, 1, 4)]), .invalidField)  // vCPU 1 first
        expectRejected(DeviceState.self, state([section(1, 0, 0, 4)]), .invalidField)  // version 0
        expectRejected(DeviceState.self, state([section(0, 1, 0, 4)]), .invalidField)  // kind 0
        // Mixed formats.
        expectRejected(DeviceState.self, state([section(1, 1, 0, 4), section(1, 2, 1, 4)]), .invalidField)
        expectRejected(
            DeviceState.self, state([section(1, 1, 0, 4), section(0x100, 1, 0, 0), section(1, 1, 1, 4)]), .invalidField)
        expectRejected(
            DeviceState.self, state([section(1, 1, 0, 4), section(0x100, 1, 0, 0), section(0x100, 1, 0, 0)]),
            .invalidField)
        expectRejected(DeviceState.self, state([section(1, 1, 0, 8, body: 7)]), .truncated)
        expectRejected(DeviceState.self, state([section(1, 1, 0, 8, body: 9)]), .trailingBytes)
        expectRejected(DeviceState.self, state([section(1, 1, 0, 8)], count: 2), .truncated)
        // A length far beyond the payload: checked before reading.
        expectRejected(DeviceState.self, state([section(1, 1, 0, 0xFFFF_FFFF, body: 10)]), .truncated)
    }

    @Test func guestConfigRegionsAreChecked() {
        func config(regions: [(UInt64, UInt64)], count: UInt16? = nil) -> [UInt8] {
            let n = count ?? UInt16(regions.count)
            var out = [UInt8](repeating: 0, count: 20) + [n.lo, n.hi, 0, 0]
            for (address, pages) in regions {
                withUnsafeBytes(of: address.littleEndian) { out += $0 }
                withUnsafeBytes(of: pages.littleEndian) { out += $0 }
            }
            return out + [0, 0] + [UInt8](repeating: 0, count: 16)
        }
        #expect(throws: Never.self) {
            _ = try config(regions: [(0, 1), (8192, 3)]).withUnsafeBytes { try GuestConfig(payload: $0) }
        }
        expectRejected(GuestConfig.self, config(regions: []), .invalidField)
        expectRejected(GuestConfig.self, config(regions: [(0, 0)]), .invalidField)
        expectRejected(GuestConfig.self, config(regions: [(100, 1)]), .invalidField)
        expectRejected(GuestConfig.self, config(regions: Array(repeating: (0, 1), count: 65)), .invalidField)
        expectRejected(GuestConfig.self, config(regions: [(0, 1)], count: 2), .truncated)
    }
}

/// The lenient ABORT reading a closing connection uses: whatever the peer said is shown, even
/// from a payload `Abort(payload:)` would refuse.
@Suite struct LenientAbortTests {
    @Test func readsWhatIsThere() {
        let whole = Abort(reason: .io, message: "disk: no room").encodedPayload()
        whole.withUnsafeBytes { bytes in
            let said = Abort.lenient(bytes)
            #expect(said.reason == AbortReason.io.rawValue && said.message == "disk: no room")
            let cut = Abort.lenient(UnsafeRawBufferPointer(rebasing: bytes[0..<10]))
            #expect(cut.reason == AbortReason.io.rawValue && cut.message == "disk (message truncated)")
            #expect(Abort.lenient(UnsafeRawBufferPointer(rebasing: bytes[0..<5])).message == "")
            #expect(Abort.lenient(UnsafeRawBufferPointer(rebasing: bytes[0..<3])).reason == 0xFFFF)
        }
        #expect(AbortReason.name(wireValue: 5) == "not_converged" && AbortReason.name(wireValue: 77) == "unknown")
        #expect(FrameType.statusQuery.wireName == "STATUS_QUERY")
    }
}
