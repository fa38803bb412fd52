import FerryProtocol
import FerryTestSupport
import Testing

/// Deterministic fuzzing: mutated valid encodings must be rejected with a `ProtocolError` or
/// decoded into something that re-encodes consistently, never crash, never hang.
@Suite("Fuzz", .timeLimit(.minutes(1)), .tags(.slow), .skippable(.slow))
struct FuzzTests {
    // 1,050,000 inputs in all (~22 s in a debug build on 2 cores). Each failing input costs a backtrace in the test runner (its
    // swift_willThrow hook), which dominates the run time in debug builds.
    static let messageIterations = 600_000
    static let batchIterations = 250_000
    static let streamIterations = 200_000

    /// Tallies outcomes so each test can check the mutations reached both success and many errors.
    struct Outcomes {
        var accepted = 0
        var codes: [ProtocolError.Code: Int] = [:]
        mutating func record(_ error: ProtocolError) {
            check(!error.message.isEmpty, "error without a message: \(error)")
            codes[error.code, default: 0] += 1
        }
    }

    @Test func messageDecoders() {
        let types = messageSamples.map(\.type)
        var mutator = Mutator(seed: 0xF00D, corpus: messageSamples.map(\.payload))
        var outcomes = Outcomes()
        for iteration in 0..<Self.messageIterations {
            let (index, input) = mutator.next()
            // Its own decoder; every 64th input goes through every decoder.
            let decoders = iteration % 64 == 0 ? Array(Set(types)) : [types[index]]
            for type in decoders {
                do {
                    let reencoded = try input.withUnsafeBytesForTest { (bytes) throws(ProtocolError) in
                        try decodeAndReencode(type, bytes)
                    }
                    outcomes.accepted += 1
                    guard let reencoded else { continue }
                    if type == .refuse || type == .abort {
                        // Unknown reasons decode as `other`: only the reason may differ.
                        check(reencoded.dropFirst(2) == input.dropFirst(2), "\(type) changed: \(input)")
                    } else {
                        check(reencoded == input, "\(type) accepted a non-canonical encoding \(input)")
                    }
                    let again = try? reencoded.withUnsafeBytesForTest { (bytes) throws(ProtocolError) in
                        try decodeAndReencode(type, bytes)
                    }
                    check(again == reencoded, "\(type) re-encoding does not decode to itself: \(reencoded)")
                } catch {
                    outcomes.record(error)
                }
            }
        }
        #expect(outcomes.accepted > 1000)
        #expect(outcomes.codes.count >= 5, "\(outcomes.codes)")
    }

    @Test func pageBatchReader() {
        let corpus = [
            samplePageBatch(), samplePageBatch(lz4Length: 1, includeRaw: false),
            samplePageBatch(lz4Length: 4095), samplePageBatch(round: 9, lz4Length: 7, includeRaw: false),
        ]
        var mutator = Mutator(seed: 0xBA7C4, corpus: corpus)
        var outcomes = Outcomes()
        for _ in 0..<Self.batchIterations {
            let (_, input) = mutator.next()
            do {
                try input.withUnsafeBytesForTest { (payload) throws(ProtocolError) in
                    var reader = try PageBatchReader(payload: payload, pageSize: 4096, pageCount: samplePageCount)
                    // Payloads follow the table, in entry order.
                    var consumed = 8 + 24 * reader.count
                    var entries = 0
                    while let entry = try reader.next() {
                        entries += 1
                        check(
                            entries <= reader.count && entry.page < samplePageCount
                                && entry.encoding.allowsLength(entry.payload.count, pageSize: 4096),
                            "bad entry accepted: \(input)")
                        if entry.payload.count > 0 {
                            check(
                                entry.payload.baseAddress == payload.baseAddress! + consumed,
                                "payload misplaced: \(input)")
                        }
                        consumed += entry.payload.count
                    }
                    check(
                        entries == reader.count && consumed == payload.count, "payload not consumed exactly: \(input)")
                }
                outcomes.accepted += 1
            } catch {
                outcomes.record(error)
            }
        }
        #expect(outcomes.accepted > 100)
        #expect(outcomes.codes.count >= 4, "\(outcomes.codes)")
    }

    @Test func frameDecoderStreams() {
        let full = sampleStream().bytes
        let corpus = [
            full, Array(full[..<400]), messageSamples[0].frame(0) + Commit().encodedFrame(sequence: 1),
            rawFrame(type: 0x8001, sequence: 0, payload: [3, 0, 0x61, 0x62, 0x63])
                + rawFrame(type: 5, sequence: 1, payload: samplePageBatch(includeRaw: false)),
        ]
        var mutator = Mutator(seed: 0x5EED, corpus: corpus)
        var outcomes = Outcomes()
        var frameCount = 0
        for _ in 0..<Self.streamIterations {
            let (_, input) = mutator.next()
            var decoder = FrameDecoder()
            var start = 0
            var calls = 0
            do {
                while start < input.count {
                    let end = min(input.count, start + 1 + mutator.below(200))
                    decoder.append(contentsOf: Array(input[start..<end]))
                    start = end
                    while let frame = try decoder.next() {
                        calls += 1
                        check(calls <= input.count / 16, "more frames than headers: \(input)")
                        frameCount += 1
                        decodePayload(frame, &outcomes)
                    }
                }
                outcomes.accepted += 1
            } catch {
                outcomes.record(error)
                do {
                    _ = try decoder.next()
                    check(false, "error did not stick: \(input)")
                } catch let again {
                    check(again == error, "a different error after \(error): \(again)")
                }
            }
        }
        #expect(outcomes.accepted > 100 && frameCount > 10_000)
        #expect(outcomes.codes.count >= 4, "\(outcomes.codes)")
    }

    private func decodePayload(_ frame: Frame, _ outcomes: inout Outcomes) {
        guard let type = frame.type else {
            Issue.record("the decoder returned an unknown optional frame")
            return
        }
        check(
            frame.payload.count == Int(frame.header.length) && frame.payload.count <= type.maxPayload,
            "frame payload does not match its header: \(frame)")
        do {
            try frame.payload.withUnsafeBytesForTest { (payload) throws(ProtocolError) in
                if type == .pageBatch {
                    var reader = try PageBatchReader(payload: payload, pageSize: 4096, pageCount: samplePageCount)
                    while try reader.next() != nil {}
                } else {
                    _ = try decodeAndReencode(type, payload)
                }
            }
        } catch {
            outcomes.record(error)
        }
    }
}

/// `#expect` costs microseconds per call; fuzz loops check plainly and record only failures.
@inline(__always)
func check(_ condition: Bool, _ comment: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation) {
    if !condition { Issue.record(Comment(rawValue: comment()), sourceLocation: sourceLocation) }
}
