import FerryProtocol
import FerryTransport
import Glibc
import Testing

@Suite struct FramedConnectionTests {
    /// Deterministic frame sizes: empty, small control-sized and large batches, plus one at the
    /// protocol's maximum.
    static func frameSize(_ index: Int, salt: UInt64, count: Int) -> Int {
        if index == count / 2 { return ProtocolLimits.maxFramePayload }
        if index % 40 == 0 { return 0 }
        var x = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 ^ salt
        x ^= x >> 29
        x = x &* 0xBF58_476D_1CE4_E5B9
        x ^= x >> 32
        if index % 3 == 0 { return Int(x % 4097) }
        return Int(x % (1 << 20))
    }

    static func fill(_ index: Int, salt: UInt64) -> Int32 {
        Int32(truncatingIfNeeded: UInt64(index) &* 31 &+ salt) & 0xFF
    }

    static func sendFrames(_ connection: FramedConnection, count: Int, salt: UInt64) throws -> UInt64 {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ProtocolLimits.maxFramePayload, alignment: 16)
        defer { buffer.deallocate() }
        var wire: UInt64 = 0
        for index in 0..<count {
            let size = frameSize(index, salt: salt, count: count)
            memset(buffer.baseAddress!, fill(index, salt: salt), size)
            if size >= 8 { buffer.storeBytes(of: UInt64(index).littleEndian, toByteOffset: 0, as: UInt64.self) }
            let type: FrameType = size <= 4096 ? (index % 2 == 0 ? .roundAck : .note) : .pageBatch
            try connection.send(type, payload: UnsafeRawBufferPointer(rebasing: buffer[0..<size]))
            wire += UInt64(FrameHeader.size + size)
        }
        return wire
    }

    /// Receives and checks every frame; returns a description of the first mismatch, if any.
    static func receiveFrames(_ connection: FramedConnection, count: Int, salt: UInt64) throws -> String? {
        let expected = UnsafeMutableRawBufferPointer.allocate(byteCount: ProtocolLimits.maxFramePayload, alignment: 16)
        defer { expected.deallocate() }
        for index in 0..<count {
            let frame = try connection.receive()
            let size = frameSize(index, salt: salt, count: count)
            let type: FrameType = size <= 4096 ? (index % 2 == 0 ? .roundAck : .note) : .pageBatch
            guard frame.header.sequence == UInt64(index), frame.type == type, frame.payload.count == size else {
                return
                    "frame \(index): got sequence \(frame.header.sequence), \(frame.type), \(frame.payload.count) bytes; expected \(type), \(size) bytes"
            }
            memset(expected.baseAddress!, fill(index, salt: salt), size)
            if size >= 8 {
                expected.storeBytes(of: UInt64(index).littleEndian, toByteOffset: 0, as: UInt64.self)
            }
            if size > 0 && memcmp(expected.baseAddress!, frame.payload.baseAddress!, size) != 0 {
                return "frame \(index): payload differs"
            }
        }
        return nil
    }

    @Test func manyFramesOfVariedSizesBothWaysAtOnce() throws {
        let (a, b) = try loopbackPair()
        let left = FramedConnection(a)
        let right = FramedConnection(b)
        let count = 160
        let leftSalt: UInt64 = 0x1234
        let rightSalt: UInt64 = 0xBEEF
        let leftSender = JoinableThread { try Self.sendFrames(left, count: count, salt: leftSalt) }
        let rightSender = JoinableThread { try Self.sendFrames(right, count: count, salt: rightSalt) }
        let leftReceiver = JoinableThread { try Self.receiveFrames(left, count: count, salt: rightSalt) }
        let rightReceiver = JoinableThread { try Self.receiveFrames(right, count: count, salt: leftSalt) }
        let leftWire = try leftSender.join()
        let rightWire = try rightSender.join()
        #expect(try leftReceiver.join() == nil)
        #expect(try rightReceiver.join() == nil)

        #expect(left.framesSent == UInt64(count) && right.framesReceived == UInt64(count))
        #expect(right.framesSent == UInt64(count) && left.framesReceived == UInt64(count))
        #expect(left.bytesSent == leftWire && right.bytesReceived == leftWire)
        #expect(right.bytesSent == rightWire && left.bytesReceived == rightWire)
    }

    @Test func typedMessagesRoundTripAndNotesAreSkipped() throws {
        let (a, b) = try loopbackPair()
        let sender = FramedConnection(a)
        let receiver = FramedConnection(b)
        try sender.send(TestAck(round: 7))
        try Array("a note for the log".utf8).withUnsafeBytes { try sender.send(.note, payload: $0) }
        try sender.send(TestAck(round: 8))
        try sender.send(TestBlob([1, 2, 3]))
        #expect(try receiver.receive(TestAck.self) == TestAck(round: 7))
        #expect(try receiver.receive(TestAck.self) == TestAck(round: 8))  // the NOTE in between is skipped
        #expect(try receiver.receive(TestBlob.self) == TestBlob([1, 2, 3]))
        #expect(receiver.framesReceived == 4)
    }

    @Test func wrongMessageTypeNamesBothTypes() throws {
        let (a, b) = try loopbackPair()
        let sender = FramedConnection(a)
        let receiver = FramedConnection(b)
        try sender.send(TestBlob([9]))
        let error = transportError { _ = try receiver.receive(TestAck.self) }
        #expect(error?.code == .protocolViolation)
        #expect(
            error?.message.contains("expected a ROUND_ACK frame, got PAGE_BATCH") == true, "\(error?.message ?? "")")
        #expect(error?.protocolError?.code == .unexpectedFrame)
    }

    @Test func malformedPayloadIsAProtocolViolation() throws {
        let (a, b) = try loopbackPair()
        let sender = FramedConnection(a)
        let receiver = FramedConnection(b)
        try [UInt8](repeating: 1, count: 3).withUnsafeBytes { try sender.send(.roundAck, payload: $0) }
        let error = transportError { _ = try receiver.receive(TestAck.self) }
        #expect(error?.code == .protocolViolation)
        #expect(error?.protocolError?.code == .truncated)
        #expect(error?.message.contains("malformed ROUND_ACK frame #0") == true, "\(error?.message ?? "")")
    }

    @Test func sequenceViolationIsDetected() throws {
        let (raw, b) = try loopbackPair()
        let receiver = FramedConnection(b)
        try writeRawFrame(raw, type: FrameType.roundAck.rawValue, length: 4, sequence: 0, payload: [1, 0, 0, 0])
        try writeRawFrame(raw, type: FrameType.roundAck.rawValue, length: 4, sequence: 2, payload: [2, 0, 0, 0])
        #expect(try receiver.receive(TestAck.self) == TestAck(round: 1))
        let error = transportError { _ = try receiver.receive() }
        #expect(error?.code == .protocolViolation)
        #expect(error?.protocolError?.code == .sequence)
        #expect(error?.message.contains("expected frame sequence 1, got 2") == true, "\(error?.message ?? "")")
        // The receive side is out of step for good.
        #expect(transportError { _ = try receiver.receive() }?.protocolError?.code == .sequence)
    }

    @Test(arguments: [
        (FrameType.roundAck.rawValue, UInt32(4097), ProtocolError.Code.tooLarge),
        (FrameType.pageBatch.rawValue, UInt32.max, .tooLarge),
        (FrameType.deviceState.rawValue, UInt32(ProtocolLimits.maxFramePayload + 1), .tooLarge),
        (UInt16(99), UInt32(4), .unknownFrameType),
        (UInt16(0), UInt32(0), .unknownFrameType),
    ])
    func badHeaderIsRejectedBeforeThePayloadIsRead(type: UInt16, length: UInt32, expected: ProtocolError.Code) throws {
        let (raw, b) = try loopbackPair()
        try b.setReceiveTimeout(ms: 3000)
        let receiver = FramedConnection(b)
        // Only the header is sent: a receiver that tried to read the payload would time out.
        try writeRawFrame(raw, type: type, length: length, sequence: 0)
        let start = nowMilliseconds()
        let error = transportError { _ = try receiver.receive() }
        #expect(error?.code == .protocolViolation, "\(String(describing: error))")
        #expect(error?.protocolError?.code == expected)
        #expect(milliseconds(since: start) < 1000)
    }

    @Test func connectionMaximumIsEnforcedBelowTheTypeMaximum() throws {
        let (raw, b) = try loopbackPair()
        try b.setReceiveTimeout(ms: 3000)
        let receiver = FramedConnection(b, maxPayload: 1 << 20)
        try writeRawFrame(raw, type: FrameType.pageBatch.rawValue, length: 2 << 20, sequence: 0)
        let error = transportError { _ = try receiver.receive() }
        #expect(error?.code == .protocolViolation)
        #expect(error?.protocolError?.code == .tooLarge)
    }

    @Test func nonZeroFlagsOnAMandatoryFrameAreRejected() throws {
        let (raw, b) = try loopbackPair()
        let receiver = FramedConnection(b)
        try writeRawFrame(raw, type: FrameType.roundAck.rawValue, flags: 1, length: 0, sequence: 0)
        #expect(transportError { _ = try receiver.receive() }?.protocolError?.code == .invalidField)
    }

    @Test func unknownOptionalFramesAreSkipped() throws {
        let (raw, b) = try loopbackPair()
        let receiver = FramedConnection(b)
        try writeRawFrame(
            raw, type: 0x8005, length: 10_000, sequence: 0, payload: [UInt8](repeating: 0xAB, count: 10_000))
        try writeRawFrame(raw, type: 0x8007, flags: 3, length: 0, sequence: 1)
        try writeRawFrame(raw, type: FrameType.roundAck.rawValue, length: 4, sequence: 2, payload: [5, 0, 0, 0])
        let frame = try receiver.receive()
        #expect(frame.type == .roundAck)
        #expect(frame.header.sequence == 2)
        #expect(Array(frame.payload) == [5, 0, 0, 0])
        #expect(receiver.framesReceived == 3)
        #expect(receiver.bytesReceived == UInt64(3 * FrameHeader.size + 10_004))
    }

    @Test func peerClosingMidFrameIsPeerClosed() throws {
        let (raw, b) = try loopbackPair()
        let receiver = FramedConnection(b)
        try writeRawFrame(
            raw, type: FrameType.pageBatch.rawValue, length: 100_000, sequence: 0,
            payload: [UInt8](repeating: 1, count: 1000))
        raw.close()
        let error = transportError { _ = try receiver.receive() }
        #expect(error?.code == .peerClosed)
        #expect(error?.message.contains("mid-frame") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("1000 of 100000 payload bytes") == true, "\(error?.message ?? "")")
    }

    @Test func peerClosingMidHeaderIsPeerClosed() throws {
        let (raw, b) = try loopbackPair()
        let receiver = FramedConnection(b)
        try [UInt8](repeating: 1, count: 5).withUnsafeBytes { try raw.writeAll($0) }
        raw.close()
        let error = transportError { _ = try receiver.receive() }
        #expect(error?.code == .peerClosed)
        #expect(error?.message.contains("5 of 16 bytes") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("header") == true)
    }

    @Test func peerClosingBetweenFramesIsPeerClosed() throws {
        let (a, b) = try loopbackPair()
        let receiver = FramedConnection(b)
        a.close()
        let error = transportError { _ = try receiver.receive() }
        #expect(error?.code == .peerClosed)
        #expect(error?.message.contains("closed the connection") == true)
    }

    @Test func receiveTimeoutBetweenFramesLeavesTheConnectionUsable() throws {
        let (a, b) = try loopbackPair()
        let sender = FramedConnection(a)
        let receiver = FramedConnection(b)
        try b.setReceiveTimeout(ms: 100)
        let start = nowMilliseconds()
        let error = transportError { _ = try receiver.receive() }
        #expect(error?.code == .timeout)
        #expect(milliseconds(since: start) >= 90)
        try sender.send(TestAck(round: 3))
        #expect(try receiver.receive(TestAck.self) == TestAck(round: 3))
    }

    @Test func abortFrameBecomesPeerAborted() throws {
        let (a, b) = try loopbackPair()
        let sender = FramedConnection(a)
        let receiver = FramedConnection(b)
        try abortPayload(reason: 3, message: "disk full on /var/lib/ferry").withUnsafeBytes {
            try sender.send(.abort, payload: $0)
        }
        let error = transportError { _ = try receiver.receive(TestAck.self) }
        #expect(error?.code == .peerAborted)
        #expect(error?.abortReason == 3)
        #expect(error?.message == "disk full on /var/lib/ferry")
        #expect(error?.description == "peer aborted the migration (reason 3 io): disk full on /var/lib/ferry")
    }

    @Test func oversizePayloadIsRefusedLocallyWithoutSendingAnything() throws {
        let (a, b) = try loopbackPair()
        let sender = FramedConnection(a)
        let receiver = FramedConnection(b)
        let error = transportError {
            try [UInt8](repeating: 0, count: 4097).withUnsafeBytes { try sender.send(.roundAck, payload: $0) }
        }
        #expect(error?.code == .protocolViolation)
        try sender.send(TestAck(round: 1))
        let frame = try receiver.receive()
        #expect(frame.header.sequence == 0)
        #expect(sender.framesSent == 1)
    }

    @Test func closeWakesABlockedReceiver() throws {
        let (a, b) = try loopbackPair()
        let receiver = FramedConnection(b)
        let waiter = JoinableThread { () -> TransportError? in transportError { _ = try receiver.receive() } }
        usleep(50_000)
        let closedAt = nowMilliseconds()
        receiver.close()
        let error = try waiter.join()
        #expect(error?.code == .peerClosed)
        #expect(milliseconds(since: closedAt) < 1000)
        withExtendedLifetime(a) {}
    }
}
