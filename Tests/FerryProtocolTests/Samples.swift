import FerryProtocol

/// One valid message of some type, type-erased so tests can be parameterized over all of them.
struct MessageSample: Sendable, CustomStringConvertible {
    let name: String
    let type: FrameType
    let payload: [UInt8]
    /// Decodes `payload` with this sample's type; returns whether it equals the sample and the
    /// re-encoded payload.
    let decode: @Sendable (UnsafeRawBufferPointer) throws(ProtocolError) -> (equal: Bool, reencoded: [UInt8])
    let frame: @Sendable (UInt64) -> [UInt8]

    init<M: FrameMessage & Equatable>(_ name: String, _ message: M) {
        self.name = name
        self.type = M.frameType
        self.payload = message.encodedPayload()
        self.decode = { (bytes) throws(ProtocolError) in
            let decoded = try M(payload: bytes)
            return (decoded == message, decoded.encodedPayload())
        }
        self.frame = { message.encodedFrame(sequence: $0) }
    }

    var description: String { name }
}

/// Decodes `payload` as a message of `type`, returning its re-encoding (so a successful decode can
/// be checked for idempotence). Nil for PAGE_BATCH, which has its own reader.
func decodeAndReencode(_ type: FrameType, _ payload: UnsafeRawBufferPointer) throws(ProtocolError) -> [UInt8]? {
    switch type {
    case .hello: return try Hello(payload: payload).encodedPayload()
    case .accept: return try Accept(payload: payload).encodedPayload()
    case .refuse: return try Refuse(payload: payload).encodedPayload()
    case .guestConfig: return try GuestConfig(payload: payload).encodedPayload()
    case .pageBatch: return nil
    case .roundEnd: return try RoundEnd(payload: payload).encodedPayload()
    case .roundAck: return try RoundAck(payload: payload).encodedPayload()
    case .deviceState: return try DeviceState(payload: payload).encodedPayload()
    case .complete: return try Complete(payload: payload).encodedPayload()
    case .verified: return try Verified(payload: payload).encodedPayload()
    case .commit: return try Commit(payload: payload).encodedPayload()
    case .resumed: return try Resumed(payload: payload).encodedPayload()
    case .abort: return try Abort(payload: payload).encodedPayload()
    case .note: return try Note(payload: payload).encodedPayload()
    case .join: return try Join(payload: payload).encodedPayload()
    case .streamRoundEnd: return try StreamRoundEnd(payload: payload).encodedPayload()
    case .resume: return try Resume(payload: payload).encodedPayload()
    case .resumeState: return try ResumeState(payload: payload).encodedPayload()
    case .statusQuery: return try StatusQuery(payload: payload).encodedPayload()
    case .status: return try Status(payload: payload).encodedPayload()
    case .authHello: return try AuthHello(payload: payload).encodedPayload()
    case .authChallenge: return try AuthChallenge(payload: payload).encodedPayload()
    case .authProof: return try AuthProof(payload: payload).encodedPayload()
    case .done: return try Done(payload: payload).encodedPayload()
    case .guestAttachment: return try GuestAttachmentChunk(payload: payload).encodedPayload()
    case .diskHello: return try DiskHello(payload: payload).encodedPayload()
    case .diskAccept: return try DiskAccept(payload: payload).encodedPayload()
    case .diskBlock: return nil
    case .diskEnd: return try DiskEnd(payload: payload).encodedPayload()
    case .diskVerified: return try DiskVerified(payload: payload).encodedPayload()
    case .diskResume: return try DiskResume(payload: payload).encodedPayload()
    case .diskResumeState: return try DiskResumeState(payload: payload).encodedPayload()
    case .diskJoin: return try DiskJoin(payload: payload).encodedPayload()
    case .diskStreamEnd: return try DiskStreamEnd(payload: payload).encodedPayload()
    case .diskBaseHashes: return try DiskBaseHashes(payload: payload).encodedPayload()
    case .diskDelta: return try DiskDelta(payload: payload).encodedPayload()
    case .diskStreamsHeld: return try DiskStreamsHeld(payload: payload).encodedPayload()
    case .postcopyBegin: return try PostcopyBegin(payload: payload).encodedPayload()
    case .pageRequest: return try PageRequest(payload: payload).encodedPayload()
    }
}

let sampleRecords = [
    VCPURecord(
        step: 1_000_000, rngState: 0x9E37_79B9_7F4A_7C15, cursor: 4095, cursor2: 7,
        creditNanoseconds: -12_345, traceEpochMilliseconds: 1_700_000_000_000),
    VCPURecord(step: 0, rngState: 1, cursor: 0, cursor2: 0, creditNanoseconds: .max, traceEpochMilliseconds: 0),
]

/// A session token with every byte distinct, so that a field read at the wrong offset shows.
let sampleToken = SessionToken(low: 0x0807_0605_0403_0201, high: 0x100F_0E0D_0C0B_0A09)

let messageSamples: [MessageSample] = [
    MessageSample("HELLO", Hello(pageSize: 4096, pageCount: 65536, vcpuCount: 2, sourceName: "src-1")),
    MessageSample(
        "HELLO extremes",
        Hello(
            versionMin: 1, versionMax: 7, pageSize: 65536, pageCount: UInt64(Int64.max) / 65536,
            codecs: CodecSet(rawValue: 0xFFFF_FFFF), cpuStateFormat: 9, guestKind: 0xFFFF, vcpuCount: 64,
            streamCount: 16, sourceName: String(repeating: "é", count: 127))),
    MessageSample(
        "ACCEPT",
        Accept(
            codecs: .required, memoryAvailable: 8 << 30, diskAvailable: 1 << 40,
            sessionID: 0x0123_4567_89AB_CDEF, sessionToken: sampleToken, destinationName: "dst ✓")),
    MessageSample("JOIN", Join(sessionID: 0x0123_4567_89AB_CDEF, sessionToken: sampleToken, streamIndex: 15)),
    MessageSample("STREAM_ROUND_END", StreamRoundEnd(round: 7, batches: 12, pages: 40_000)),
    MessageSample(
        "STATUS_QUERY by session",
        StatusQuery(sessionID: 0x0123_4567_89AB_CDEF, sessionToken: sampleToken, resolve: true)),
    MessageSample("STATUS_QUERY resolve without token", StatusQuery(sessionID: 0x0123_4567_89AB_CDEF, resolve: true)),
    MessageSample("STATUS_QUERY by guest", StatusQuery(guestName: "web-1.prod")),
    MessageSample("STATUS_QUERY all", StatusQuery()),
    MessageSample(
        "STATUS awaiting commit",
        Status(
            index: 1, total: 3, state: .awaitingCommit, sessionID: 0xFEED_F00D,
            digest: 0xDEAD_BEEF_CAFE_F00D, pageCount: 65536, ageSeconds: 12,
            guestName: "web-1", message: "verified; waiting for the source's COMMIT")),
    MessageSample("STATUS unknown", Status(state: .unknown, sessionID: 7)),
    MessageSample("REFUSE", Refuse(reason: .imageExists, message: "/var/lib/ferry/g.img exists: pass --force")),
    MessageSample("REFUSE other", Refuse(reason: .other, message: "")),
    MessageSample(
        "GUEST_CONFIG",
        GuestConfig(
            seed: 42, guestMAC: MACAddress(octets: [0x02, 0, 0, 0xAB, 0xCD, 0xEF]), guestIPv4: 0x0A00_0002,
            workload: "trace:/tmp/t.csv", attachmentLength: 12, attachmentHash: 0x0123_4567_89AB_CDEF,
            regions: [MemoryRegionDescriptor(guestPhysicalAddress: 0, pageCount: 65536)])),
    MessageSample("GUEST_ATTACHMENT", GuestAttachmentChunk(offset: 3 << 20, bytes: Array("0 1 2\n3 4 5\n".utf8))),
    MessageSample(
        "GUEST_CONFIG empty",
        GuestConfig(seed: 0, workload: "", regions: [MemoryRegionDescriptor(guestPhysicalAddress: 0, pageCount: 1)])),
    MessageSample(
        "GUEST_CONFIG regions",
        GuestConfig(
            seed: 7, workload: "example",
            regions: [
                MemoryRegionDescriptor(guestPhysicalAddress: 0, pageCount: 256),
                MemoryRegionDescriptor(guestPhysicalAddress: 1 << 32, pageCount: 16),
            ])),
    MessageSample(
        "ROUND_END",
        RoundEnd(
            round: 3, pagesSent: 1000, wireBytes: 4_000_000, durationMicroseconds: 12_345,
            dirtyPages: 77, dirtyRate: 5000, throttlePercent: 99)),
    MessageSample(
        "ROUND_ACK",
        RoundAck(
            round: 3, pagesReceived: 1000, pagesHeld: 65536,
            applyMicroseconds: 999, digestMicroseconds: 1234)),
    MessageSample(
        "DEVICE_STATE",
        DeviceState(
            sections: sampleRecords.enumerated().map { index, record in
                var body: [UInt8] = []
                record.encode(into: &body)
                return DeviceStateSection(
                    kind: DeviceStateSection.vcpu, version: 1, instance: UInt32(index), body: body)
            })),
    MessageSample(
        "DEVICE_STATE devices",
        DeviceState(sections: [
            DeviceStateSection(kind: DeviceStateSection.vcpu, version: 2, instance: 0, body: Array(1...15)),
            DeviceStateSection(kind: 0x0100, version: 3, instance: 0, body: []),
            DeviceStateSection(kind: 0x8100, version: 1, instance: 7, body: [9, 9]),
        ])),
    MessageSample(
        "COMPLETE",
        Complete(finalRound: 9, pageCount: 65536, digest: 0xDEAD_BEEF_CAFE_F00D, stateDigest: 0x0123_4567_89AB_CDEF)),
    MessageSample(
        "VERIFIED ok",
        Verified(
            ok: true, digest: 0xDEAD_BEEF_CAFE_F00D, pagesMissing: 0,
            verifyMicroseconds: 800)),
    MessageSample(
        "VERIFIED failed",
        Verified(
            ok: false, digest: 1, pagesMissing: 3, verifyMicroseconds: 2,
            message: "3 pages never arrived")),
    MessageSample("COMMIT", Commit()),
    MessageSample("RESUMED", Resumed(resumeMicroseconds: 1500)),
    MessageSample("ABORT", Abort(reason: .notConverged, message: "dirty rate 80000 pages/s exceeds the link")),
    MessageSample("NOTE", Note(text: "round 3: 1000 pages")),
    MessageSample(
        "RESUME", Resume(sessionID: 0x0123_4567_89AB_CDEF, sessionToken: sampleToken, pageCount: 65536, round: 4)),
    MessageSample(
        "RESUME_STATE",
        ResumeState(
            pageCount: 200, firstPage: 64, pages: 136, round: 4,
            held: [~0, 0x0F0F, 0xFF], current: [0xF0, 0x0F00, 0x01])),
    MessageSample("AUTH_HELLO", AuthHello(clientNonce: Array(0..<32), encryptRequested: true, ciphers: .all)),
    MessageSample(
        "AUTH_HELLO plain",
        AuthHello(
            clientNonce: Array(repeating: 0xFF, count: 32), encryptRequested: false,
            ciphers: CipherSet(rawValue: 0x8001))),
    MessageSample(
        "AUTH_CHALLENGE", AuthChallenge(serverNonce: Array(32..<64), cipher: .aes256GCM, serverProof: Array(64..<96))),
    MessageSample(
        "AUTH_CHALLENGE plain",
        AuthChallenge(
            serverNonce: Array(repeating: 1, count: 32), cipher: .none,
            serverProof: Array(repeating: 2, count: 32))),
    MessageSample("AUTH_PROOF", AuthProof(clientProof: Array(100..<132))),
    MessageSample("DONE", Done()),
    MessageSample(
        "POSTCOPY_BEGIN",
        PostcopyBegin(
            round: 3, pageCount: 130, stateDigest: 0x0102_0304_0506_0708, stale: [0x8000_0000_0000_0001, 0, 0b10])),
    MessageSample("PAGE_REQUEST", PageRequest(pages: [7, 0, UInt64(Int64.max)])),
    MessageSample(
        "DISK_HELLO",
        DiskHello(
            blockSize: 65536, diskSize: 256 << 20, allocatedBytes: 26 << 20, blocksToSend: 500,
            sourceName: "src-1", diskName: "vm.img")),
    MessageSample(
        "DISK_ACCEPT",
        DiskAccept(freeBytes: 1 << 40, moveID: 0x0123_4567_89AB_CDEF, moveToken: sampleToken, destinationName: "dst ✓")),
    MessageSample("DISK_RESUME", DiskResume(moveID: 0x0123_4567_89AB_CDEF, moveToken: sampleToken)),
    MessageSample("DISK_RESUME_STATE", DiskResumeState(blocksHeld: 300, nextBlock: 1811)),
    MessageSample(
        "DISK_STREAMS_HELD",
        DiskStreamsHeld(streams: [
            DiskResumeState(blocksHeld: 300, nextBlock: 1811), DiskResumeState(blocksHeld: 0, nextBlock: 0),
            DiskResumeState(blocksHeld: 7, nextBlock: 99),
        ])),
    MessageSample(
        "DISK_ACCEPT base",
        DiskAccept(
            flags: DiskAccept.baseFlag, freeBytes: 1 << 40, moveID: 3, moveToken: sampleToken, destinationName: "d")),
    MessageSample("DISK_BASE_HASHES", DiskBaseHashes(firstBlock: 8192, hashes: [1, 0x0123_4567_89AB_CDEF, 0])),
    MessageSample("DISK_DELTA", DiskDelta(blocksToSend: 41, blocksUnchanged: 359)),
    MessageSample("DISK_JOIN", DiskJoin(moveID: 0x0123_4567_89AB_CDEF, moveToken: sampleToken, streamIndex: 15)),
    MessageSample("DISK_STREAM_END", DiskStreamEnd(blocksSent: 77)),
    MessageSample("DISK_END", DiskEnd(blocksSent: 500, digest: 0x0123_4567_89AB_CDEF)),
    MessageSample("DISK_VERIFIED", DiskVerified(digest: 0x0123_4567_89AB_CDEF, bytesWritten: 26 << 20)),
]

/// A small `PAGE_BATCH` payload (zero, "LZ4", "words" and optionally raw entries; the codec
/// does not decode payloads) for pages of 4096 bytes in an image of `samplePageCount` pages.
func samplePageBatch(round: UInt32 = 1, lz4Length: Int = 100, includeRaw: Bool = true) -> [UInt8] {
    let pageSize = 4096
    var storage = [UInt8](repeating: 0xEE, count: 8 + 5 * (24 + pageSize))
    return storage.withUnsafeMutableBytes { buffer in
        var writer = PageBatchWriter(buffer: buffer, pageSize: pageSize, maxEntries: 5)
        writer.reset(round: round)
        writer.commitEntry(page: 0, hash: 0x1111, encoding: .zero, length: 0)
        writer.payloadSlot.initializeMemory(as: UInt8.self, repeating: 0x5A, count: lz4Length)
        writer.commitEntry(page: samplePageCount - 1, hash: 0x2222, encoding: .lz4, length: lz4Length)
        if includeRaw {
            writer.payloadSlot.initializeMemory(as: UInt8.self, repeating: 0xA5, count: pageSize)
            writer.commitEntry(page: 7, hash: 0x3333, encoding: .raw, length: pageSize)
        }
        writer.payloadSlot.initializeMemory(as: UInt8.self, repeating: 0x3C, count: 30)
        writer.commitEntry(page: 5, hash: 0x4444, encoding: .words, length: 30)
        writer.commitEntry(page: 3, hash: 0x1111, encoding: .zero, length: 0)
        return Array(writer.finish())
    }
}

let samplePageCount: UInt64 = 16

/// Frame bytes with an arbitrary header (for hostile inputs).
func rawFrame(type: UInt16, flags: UInt16 = 0, sequence: UInt64, payload: [UInt8]) -> [UInt8] {
    FrameHeader(type: type, flags: flags, length: UInt32(payload.count), sequence: sequence).bytes + payload
}

/// Every sample message as a frame, sequences 0… in order, with a small page batch, an unknown
/// optional frame (with a flag set) and an empty unknown optional frame in the middle. `frames`
/// holds what a decoder must return (the unknown frames are skipped).
func sampleStream() -> (bytes: [UInt8], frames: [Frame]) {
    var bytes: [UInt8] = []
    var frames: [Frame] = []
    var sequence: UInt64 = 0
    func add(_ type: UInt16, flags: UInt16 = 0, _ payload: [UInt8], known: Bool = true) {
        bytes += rawFrame(type: type, flags: flags, sequence: sequence, payload: payload)
        if known {
            frames.append(
                Frame(
                    header: FrameHeader(
                        type: type, flags: flags, length: UInt32(payload.count),
                        sequence: sequence), payload: payload))
        }
        sequence += 1
    }
    for (i, sample) in messageSamples.enumerated() {
        add(sample.type.rawValue, sample.payload)
        if i == 5 {
            add(FrameType.pageBatch.rawValue, samplePageBatch(lz4Length: 33, includeRaw: false))
            add(0x8123, flags: 0x0001, Array(repeating: 0xAB, count: 37), known: false)
            add(0x8FFF, [], known: false)
        }
    }
    return (bytes, frames)
}
