import FerryProtocol
import Testing

/// Feeds `bytes` to a fresh decoder `chunk` bytes at a time, calling `next()` until nil after
/// each append.
func decodeAll(_ bytes: [UInt8], chunk: Int) throws(ProtocolError) -> [Frame] {
    var decoder = FrameDecoder()
    var frames: [Frame] = []
    var start = 0
    while start < bytes.count {
        let end = min(bytes.count, start + chunk)
        decoder.append(contentsOf: Array(bytes[start..<end]))
        start = end
        while let frame = try decoder.next() { frames.append(frame) }
    }
    #expect(decoder.bufferedByteCount == 0)
    return frames
}

/// Decoding `bytes` must fail with `code`, and must fail at or before the byte `atOrBefore`.
func expectStreamRejected(
    _ bytes: [UInt8], _ code: ProtocolError.Code, atOrBefore limit: Int? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    var decoder = FrameDecoder()
    let stop = min(bytes.count, limit ?? bytes.count)
    decoder.append(contentsOf: Array(bytes[..<stop]))
    let error = #expect(throws: ProtocolError.self, sourceLocation: sourceLocation) {
        while try decoder.next() != nil {}
    }
    #expect(error?.code == code, "\(error?.description ?? "no error")", sourceLocation: sourceLocation)
    // The error sticks.
    decoder.append(contentsOf: Array(bytes[stop...]))
    let again = #expect(throws: ProtocolError.self, sourceLocation: sourceLocation) { _ = try decoder.next() }
    #expect(again == error, sourceLocation: sourceLocation)
}

let stream = sampleStream()

@Suite("Frame decoder")
struct FrameDecoderTests {
    @Test(arguments: 1...stream.bytes.count)
    func anyChunkingYieldsTheSameFrames(_ chunk: Int) throws {
        let frames = try decodeAll(stream.bytes, chunk: chunk)
        #expect(frames == stream.frames)
    }

    @Test func framesDecodeToTheirMessages() throws {
        let frames = try decodeAll(stream.bytes, chunk: stream.bytes.count)
        #expect(frames.count == messageSamples.count + 1)
        for frame in frames where frame.type != .pageBatch {
            let sample = messageSamples.first { $0.payload == frame.payload && $0.type == frame.type }
            #expect(sample != nil)
        }
        let hello = try frames[0].message(as: Hello.self)
        #expect(hello.sourceName == "src-1")
        let batchFrame = try #require(frames.first { $0.type == .pageBatch })
        try batchFrame.payload.withUnsafeBytes { payload in
            var reader = try PageBatchReader(payload: payload, pageSize: 4096, pageCount: samplePageCount)
            var pages: [UInt64] = []
            while let entry = try reader.next() { pages.append(entry.page) }
            #expect(pages == [0, samplePageCount - 1, 5, 3])
        }
    }

    @Test func unknownOptionalFramesAreSkippedButCounted() throws {
        let bytes =
            rawFrame(type: 0x8042, sequence: 0, payload: [1, 2, 3])
            + rawFrame(type: 0xFFFF, flags: 0xFFFF, sequence: 1, payload: Array(repeating: 9, count: 5000))
            + Commit().encodedFrame(sequence: 2)
        for chunk in [1, 7, 16, 19, 4096, bytes.count] {
            let frames = try decodeAll(bytes, chunk: chunk)
            #expect(frames.map(\.header.type) == [FrameType.commit.rawValue])
            #expect(frames.first?.header.sequence == 2)
        }
        // The skipped payload is discarded as it arrives, not held.
        var decoder = FrameDecoder()
        decoder.append(contentsOf: Array(bytes[..<(19 + 16 + 2000)]))
        #expect(try decoder.next() == nil)
        #expect(decoder.bufferedByteCount == 0)
        #expect(decoder.bytesNeeded == 3000)
        #expect(decoder.expectedSequence == 2)
    }

    @Test func knownOptionalFrameIsReturned() throws {
        let frames = try decodeAll(Note(text: "hi").encodedFrame(sequence: 0), chunk: 3)
        #expect(try frames.first?.message(as: Note.self).text == "hi")
    }

    @Test func typeZeroIsRejected() {
        expectStreamRejected(rawFrame(type: 0, sequence: 0, payload: []), .unknownFrameType)
        expectStreamRejected(rawFrame(type: 0x8000, sequence: 0, payload: [1]), .unknownFrameType)
        expectStreamRejected([UInt8](repeating: 0, count: 64), .unknownFrameType)
    }

    @Test func unknownMandatoryTypeIsRejected() {
        for type: UInt16 in [0x1000, 0x7FFF, 0x100] {
            expectStreamRejected(rawFrame(type: type, sequence: 0, payload: []), .unknownFrameType)
        }
    }

    @Test func flagsOnMandatoryFramesAreRejected() {
        for flags: UInt16 in [1, 0x8000] {
            expectStreamRejected(rawFrame(type: 11, flags: flags, sequence: 0, payload: []), .invalidField)
        }
    }

    @Test func oversizeLengthIsRejectedFromTheHeaderAlone() throws {
        let cases: [(UInt16, Int)] = [
            (FrameType.hello.rawValue, 4097), (FrameType.commit.rawValue, 4097),
            (FrameType.deviceState.rawValue, ProtocolLimits.maxFramePayload + 1),
            (FrameType.pageBatch.rawValue, ProtocolLimits.maxFramePayload + 1),
            (FrameType.guestConfig.rawValue, Int(UInt32.max)), (0x8123, ProtocolLimits.maxFramePayload + 1),
            (FrameType.note.rawValue, 4097),
        ]
        for (type, length) in cases {
            let header = FrameHeader(type: type, length: UInt32(length), sequence: 0).bytes
            expectStreamRejected(header, .tooLarge)
        }
        // At the limit the header is fine and the decoder waits for the payload.
        var decoder = FrameDecoder()
        decoder.append(contentsOf: FrameHeader(.pageBatch, length: ProtocolLimits.maxFramePayload, sequence: 0).bytes)
        let frame = try decoder.next()
        #expect(frame == nil)
        #expect(decoder.bytesNeeded == ProtocolLimits.maxFramePayload)
    }

    @Test func sequenceMustContinueByOne() {
        let commit0 = Commit().encodedFrame(sequence: 0)
        expectStreamRejected(commit0 + Commit().encodedFrame(sequence: 0), .sequence)  // duplicate
        expectStreamRejected(commit0 + Commit().encodedFrame(sequence: 2), .sequence)  // skip
        expectStreamRejected(Commit().encodedFrame(sequence: 1), .sequence)  // first is not 0
        expectStreamRejected(commit0 + rawFrame(type: 0x8001 | 0x0100, sequence: 5, payload: []), .sequence)
        // Checked from the header alone, before the payload arrives.
        let hello = messageSamples[0].frame(3)
        expectStreamRejected(hello, .sequence, atOrBefore: FrameHeader.size)
    }

    @Test func truncatedStreamWaitsForMore() throws {
        let bytes = messageSamples[0].frame(0)
        var decoder = FrameDecoder()
        decoder.append(contentsOf: Array(bytes.dropLast()))
        #expect(try decoder.next() == nil)
        #expect(decoder.bytesNeeded == 1)
        decoder.append(contentsOf: [bytes.last!])
        #expect(try decoder.next()?.payload == messageSamples[0].payload)
        #expect(try decoder.next() == nil)
        #expect(decoder.bytesNeeded == FrameHeader.size)
    }

    @Test func appendFromRawBuffer() throws {
        var decoder = FrameDecoder()
        stream.bytes.withUnsafeBytes { decoder.append($0) }
        var count = 0
        while try decoder.next() != nil { count += 1 }
        #expect(count == stream.frames.count)
    }
}
