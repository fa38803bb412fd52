import FerryProtocol
import Testing

/// Reads `input` the way `FramedConnection` reads a socket: exactly the bytes `FrameCursor` asks
/// for, a header at a time, then the payload in pieces (sizes from `pieces`) up to what remains,
/// as `PageSink` reads a direct PAGE_BATCH (batch header, table, scatter reads).
func pullFrames(_ input: [UInt8], payloadLimit: Int? = nil, pieces: inout Mutator) -> (
    frames: [Frame], error: ProtocolError?
) {
    var cursor = FrameCursor()
    if let payloadLimit { cursor.payloadLimit = payloadLimit }
    var offset = 0
    var frames: [Frame] = []
    while input.count - offset >= FrameHeader.size {
        #expect(cursor.expecting == .header)
        let start = offset
        let accepted = input.withUnsafeBytes { bytes in
            Result { () throws(ProtocolError) in
                try cursor.accept(header: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + FrameHeader.size)]))
            }
        }
        let header: FrameHeader
        switch accepted {
        case .success(let accepted): header = accepted
        case .failure(let error): return (frames, error)
        }
        offset += FrameHeader.size
        #expect(cursor.current == header && cursor.remaining == Int(header.length))
        var payload: [UInt8] = []
        while cursor.remaining > 0 {
            let piece = min(cursor.remaining, input.count - offset, 1 + pieces.below(5000))
            if piece == 0 { return (frames, nil) }  // the stream ends inside the payload
            if header.frameType != nil { payload += input[offset..<(offset + piece)] }
            offset += piece
            cursor.consume(piece)
        }
        if header.frameType != nil { frames.append(Frame(header: header, payload: payload)) }
    }
    return (frames, nil)
}

/// What `FrameDecoder` (the buffered reader the other fuzz tests use) makes of all of `input`.
func pushFrames(_ input: [UInt8]) -> (frames: [Frame], error: ProtocolError?) {
    var decoder = FrameDecoder()
    decoder.append(contentsOf: input)
    var frames: [Frame] = []
    do {
        while let frame = try decoder.next() { frames.append(frame) }
        return (frames, nil)
    } catch {
        return (frames, error)
    }
}

@Suite("Frame cursor", .timeLimit(.minutes(1)))
struct FrameCursorTests {
    /// The production reading pattern and the buffered decoder agree on every mutated stream.
    @Test func readingWhatItAsksForMatchesTheBufferedDecoder() {
        let full = sampleStream().bytes
        let corpus = [
            full, Array(full[..<400]), messageSamples[0].frame(0) + Commit().encodedFrame(sequence: 1),
            rawFrame(type: 0x8001, sequence: 0, payload: [3, 0, 0x61, 0x62, 0x63])
                + rawFrame(type: 0x8042, sequence: 1, payload: Array(repeating: 7, count: 9000))
                + rawFrame(type: 5, sequence: 2, payload: samplePageBatch(includeRaw: false)),
        ]
        var mutator = Mutator(seed: 0xC0A5, corpus: corpus)
        var pieces = Mutator(seed: 0x9, corpus: [])
        var failures: Set<ProtocolError.Code> = []
        var frameCount = 0
        for _ in 0..<20_000 {
            let (_, input) = mutator.next()
            let pulled = pullFrames(input, pieces: &pieces)
            let pushed = pushFrames(input)
            check(
                pulled.frames == pushed.frames && pulled.error == pushed.error,
                "pulled \(pulled.frames.count) frames, \(String(describing: pulled.error)); pushed \(pushed.frames.count), \(String(describing: pushed.error)): \(input)"
            )
            frameCount += pulled.frames.count
            if let error = pulled.error { failures.insert(error.code) }
        }
        #expect(frameCount > 4_000, "\(frameCount)")
        #expect(failures.isSuperset(of: [.unknownFrameType, .invalidField, .tooLarge, .sequence]), "\(failures)")
    }

    @Test func aLoweredLimitRejectsFromTheHeaderAlone() {
        var pieces = Mutator(seed: 1, corpus: [])
        let hello = messageSamples[0].frame(0)
        let helloLength = hello.count - FrameHeader.size
        // Only the header is there: the limit is checked before any payload byte.
        let (frames, error) = pullFrames(
            Array(hello[..<FrameHeader.size]), payloadLimit: helloLength - 1, pieces: &pieces)
        #expect(frames.isEmpty)
        #expect(error?.code == .tooLarge)
        #expect(
            error?.message.contains("exceeds this connection's maximum of \(helloLength - 1) before authentication")
                == true, "\(String(describing: error))")
        #expect(pullFrames(hello, payloadLimit: helloLength, pieces: &pieces).frames.count == 1)
        // Skipped optional frames are held to the limit too.
        let note = rawFrame(type: 0x8042, sequence: 0, payload: Array(repeating: 1, count: 100))
        #expect(pullFrames(note, payloadLimit: 99, pieces: &pieces).error?.code == .tooLarge)
    }

    @Test func skippedFramesCountInTheSequenceAndTheErrorSticks() throws {
        var cursor = FrameCursor(firstSequence: 7)
        let skipped = FrameHeader(type: 0x8042, flags: 3, length: 10, sequence: 7)
        #expect(try cursor.accept(skipped) == skipped)
        #expect(cursor.expecting == .skip(remaining: 10))
        cursor.consume(4)
        cursor.consume(6)
        #expect(cursor.expecting == .header && cursor.expectedSequence == 8)
        let commit = FrameHeader(.commit, length: 0, sequence: 8)
        #expect(try cursor.accept(commit) == commit)
        #expect(cursor.expecting == .header && cursor.expectedSequence == 9)
        let late = FrameHeader(.commit, length: 0, sequence: 8)
        let error = #expect(throws: ProtocolError.self) { _ = try cursor.accept(late) }
        #expect(error?.code == .sequence)
        #expect(
            error?.message
                == "expected frame sequence 9, got 8 (frame type 11): a frame was lost, duplicated or reordered")
        let again = #expect(throws: ProtocolError.self) {
            _ = try cursor.accept(FrameHeader(.commit, length: 0, sequence: 9))
        }
        #expect(again == error && cursor.failure == error)
    }
}
