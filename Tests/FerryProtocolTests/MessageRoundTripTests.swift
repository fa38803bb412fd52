import FerryProtocol
import Testing

@Suite("Messages round trip")
struct MessageRoundTripTests {
    @Test(arguments: messageSamples)
    func decodesWhatItEncodes(_ sample: MessageSample) throws {
        let (equal, reencoded) = try sample.payload.withUnsafeBytes { try sample.decode($0) }
        #expect(equal)
        #expect(reencoded == sample.payload)
        #expect(sample.payload.count <= sample.type.maxPayload)
    }

    @Test(arguments: messageSamples)
    func frameIsHeaderThenPayload(_ sample: MessageSample) throws {
        let frame = sample.frame(41)
        let header = try frame.withUnsafeBytes { try FrameHeader.decode($0) }
        #expect(header == FrameHeader(sample.type, length: sample.payload.count, sequence: 41))
        #expect(Array(frame[FrameHeader.size...]) == sample.payload)
    }

    @Test func helloWireLayout() {
        let hello = Hello(pageSize: 4096, pageCount: 3, codecs: .all, vcpuCount: 2, streamCount: 3, sourceName: "ab")
        let expected: [UInt8] =
            Array("FERRYMIG".utf8)
            + [6, 0, 6, 0]  // version_min, version_max
            + [0, 0x10, 0, 0]  // page_size 4096
            + [3, 0, 0, 0, 0, 0, 0, 0]  // page_count
            + [15, 0, 0, 0]  // codecs zero|raw|lz4|words
            + [1, 0, 1, 0]  // cpu_state_format, guest_kind
            + [2, 0, 0, 0, 3, 0, 0, 0]  // vcpu_count, stream_count, reserved
            + [2, 0, 0x61, 0x62]  // source_name "ab"
            + [0, 0]  // guest_name ""
        #expect(hello.encodedPayload() == expected)
        #expect(hello.imageSize == 3 * 4096)
    }

    /// Version 4's token fields: right after `session_id` in ACCEPT, JOIN, RESUME and
    /// STATUS_QUERY, in wire byte order; every fixed field stays 8-byte aligned.
    @Test func sessionTokenWireLayout() {
        let id: [UInt8] = [0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01]
        let token = Array(UInt8(1)...UInt8(16))
        #expect(sampleToken.bytes == token)
        #expect(sampleToken.hex == "0102030405060708090a0b0c0d0e0f10")
        #expect(SessionToken(hex: sampleToken.hex) == sampleToken)
        #expect(SessionToken(hex: "0102") == nil && SessionToken(hex: String(repeating: "g", count: 32)) == nil)
        let accept = Accept(
            codecs: .required, memoryAvailable: 0, diskAvailable: 0, sessionID: 0x0123_4567_89AB_CDEF,
            sessionToken: sampleToken, destinationName: "d"
        ).encodedPayload()
        #expect(
            Array(accept[24..<32]) == id && Array(accept[32..<48]) == token && Array(accept[48...]) == [1, 0, 0x64])
        let join = Join(sessionID: 0x0123_4567_89AB_CDEF, sessionToken: sampleToken, streamIndex: 3).encodedPayload()
        #expect(join == id + token + [3, 0, 0, 0, 0, 0, 0, 0])
        let resume = Resume(sessionID: 0x0123_4567_89AB_CDEF, sessionToken: sampleToken, pageCount: 2, round: 5)
            .encodedPayload()
        #expect(resume == id + token + [2, 0, 0, 0, 0, 0, 0, 0] + [5, 0, 0, 0, 0, 0, 0, 0])
        let query = StatusQuery(sessionID: 0x0123_4567_89AB_CDEF, sessionToken: sampleToken, resolve: true)
            .encodedPayload()
        #expect(query == id + token + [1, 0, 0, 0, 0, 0, 0, 0] + [0, 0])
        #expect(sampleToken.matches(sampleToken) && !sampleToken.matches(.none) && !SessionToken.none.matches(.none))
        #expect(!sampleToken.matches(SessionToken(low: sampleToken.low, high: sampleToken.high ^ 1 << 63)))
        #expect(SessionToken.random() != SessionToken.random())
    }

    @Test func guestNamesAreSanitized() {
        #expect(GuestName.sanitized("../my vm/disk") == "-my-vm-disk")
        #expect(GuestName.sanitized("...x") == "x")
        #expect(GuestName.sanitized("gäst") == "g--st")
        #expect(GuestName.sanitized(String(repeating: "a", count: 100)).utf8.count == 64)
        for text in ["../my vm/disk", ".", "gäst", "ok-1.2_3", ""] {
            #expect(GuestName.problem(GuestName.sanitized(text)) == nil, "\(text)")
        }
    }

    @Test func guestConfigAddressesTravelInNetworkOrder() throws {
        let config = GuestConfig(
            seed: 1, guestMAC: MACAddress(octets: [2, 0, 0, 0, 0, 9]),
            guestIPv4: 0x0A00_0002, workload: "sweep",
            regions: [MemoryRegionDescriptor(guestPhysicalAddress: 0, pageCount: 1)])
        let payload = config.encodedPayload()
        #expect(Array(payload[8..<14]) == [2, 0, 0, 0, 0, 9])
        #expect(Array(payload[16..<20]) == [10, 0, 0, 2])
        #expect(config.guestMAC.description == "02:00:00:00:00:09")
        #expect(config.guestMAC.value == 0x0200_0000_0009)
    }

    @Test func deviceStateCarriesBuiltinRecords() throws {
        let sections = sampleRecords.enumerated().map { index, record in
            var body: [UInt8] = []
            record.encode(into: &body)
            return DeviceStateSection(kind: DeviceStateSection.vcpu, version: 1, instance: UInt32(index), body: body)
        }
        let payload = DeviceState(sections: sections).encodedPayload()
        #expect(payload.count == 8 + 2 * (16 + 64))
        let decoded = try payload.withUnsafeBytes { try DeviceState(payload: $0) }
        #expect(decoded.vcpuBodies.count == 2)
        #expect(
            try decoded.vcpuBodies.map { body in try body.withUnsafeBytes { try VCPURecord(bytes: $0) } }
                == sampleRecords)
        // credit_ns is two's complement at record offset 32 (after the 8-byte header and 16-byte section header).
        #expect(Array(payload[(24 + 32)..<(24 + 40)]) == [0xC7, 0xCF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    }

    @Test func guestConfigCarriesTheMemoryLayout() throws {
        let regions = [
            MemoryRegionDescriptor(guestPhysicalAddress: 0, pageCount: 256),
            MemoryRegionDescriptor(guestPhysicalAddress: 0x1_0000_0000, pageCount: 16),
        ]
        let payload = GuestConfig(seed: 3, workload: "w", regions: regions).encodedPayload()
        #expect(Array(payload[20..<22]) == [2, 0])
        #expect(Array(payload[24..<32]) == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(payload[40..<48]) == [0, 0, 0, 0, 1, 0, 0, 0])
        #expect(try payload.withUnsafeBytes { try GuestConfig(payload: $0) }.regions == regions)
    }

    @Test func unknownReasonsDecodeAsOther() throws {
        for raw: UInt16 in [0, 0x0100, 0x1234, 0xFFFE] {
            let refuse = try ([raw.lo, raw.hi, 0, 0, 1, 0, 0x78]).withUnsafeBytes { try Refuse(payload: $0) }
            #expect(refuse.reason == .other && refuse.message == "x")
            let abort = try ([raw.lo, raw.hi, 0, 0, 0, 0]).withUnsafeBytes { try Abort(payload: $0) }
            #expect(abort.reason == .other)
        }
        for reason in RefusalReason.allCases {
            #expect(RefusalReason(wireValue: reason.rawValue) == reason)
        }
        for reason in AbortReason.allCases {
            #expect(AbortReason(wireValue: reason.rawValue) == reason)
        }
    }

    @Test func humanTextIsCutAtItsLimitOnAScalarBoundary() throws {
        // 700 two-byte scalars = 1400 bytes; the message limit is 1024 bytes.
        let abort = Abort(reason: .io, message: String(repeating: "é", count: 700))
        let decoded = try abort.encodedPayload().withUnsafeBytes { try Abort(payload: $0) }
        #expect(decoded.message == String(repeating: "é", count: 512))
        let hello = Hello(pageSize: 4096, pageCount: 1, vcpuCount: 1, sourceName: String(repeating: "a€", count: 100))
        let name = try hello.encodedPayload().withUnsafeBytes { try Hello(payload: $0) }.sourceName
        #expect(name.utf8.count <= 255 && name.utf8.count >= 252)
        #expect(String(repeating: "a€", count: 100).hasPrefix(name))
        let note = Note(text: String(repeating: "n", count: 5000))
        #expect(note.encodedPayload().count == 4096)
    }

    @Test func frameMessageAccessorChecksTheType() throws {
        let frame = Frame(header: FrameHeader(.commit, length: 0, sequence: 0), payload: [])
        _ = try frame.message(as: Commit.self)
        let error = #expect(throws: ProtocolError.self) { try frame.message(as: Hello.self) }
        #expect(error?.code == .unexpectedFrame)
    }
}

extension UInt16 {
    var lo: UInt8 { UInt8(truncatingIfNeeded: self) }
    var hi: UInt8 { UInt8(truncatingIfNeeded: self >> 8) }
}
