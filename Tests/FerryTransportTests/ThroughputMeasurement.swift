import FerryProtocol
import FerryTransport
import Foundation
import Glibc
import Testing

/// Ad-hoc loopback throughput of one framed stream with 1 MiB frames. Not part of the normal
/// run: `FERRY_MEASURE_THROUGHPUT=1 swift test -c release --filter ThroughputMeasurement`.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["FERRY_MEASURE_THROUGHPUT"] != nil))
struct ThroughputMeasurement {
    @Test(arguments: [nil, 4 << 20] as [Int?])
    func oneMiBFramesOverLoopback(bufferSize: Int?) throws {
        let (a, b) = try loopbackPair()
        if let bufferSize {
            a.setBufferSizes(send: bufferSize, receive: bufferSize)
            b.setBufferSizes(send: bufferSize, receive: bufferSize)
        }
        let sender = FramedConnection(a)
        let receiver = FramedConnection(b)
        let frameSize = 1 << 20
        let frames = 4096  // 4 GiB
        let receiving = JoinableThread { () throws -> UInt64 in
            var sum: UInt64 = 0
            for _ in 0..<frames {
                let frame = try receiver.receive()
                sum &+= UInt64(frame.payload[frame.payload.count - 1])  // touch the payload
            }
            return sum
        }
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: frameSize, alignment: 4096)
        defer { payload.deallocate() }
        memset(payload.baseAddress!, 1, frameSize)
        let start = nowMilliseconds()
        for _ in 0..<frames { try sender.send(.pageBatch, payload: UnsafeRawBufferPointer(payload)) }
        let sum = try receiving.join()
        let elapsed = max(1, milliseconds(since: start))
        #expect(sum == UInt64(frames))
        let megabytes = Double(receiver.bytesReceived) / 1e6
        print(
            "framed loopback, 1 MiB frames, buffers \(bufferSize.map { "\($0 >> 20) MiB" } ?? "default (autotuned)") (kernel reports send \(a.bufferSizes.send), receive \(b.bufferSizes.receive)): \(Int(megabytes * 1000 / Double(elapsed))) MB/s over \(elapsed) ms"
        )
    }

    /// The same bytes through bare `writeAll`/`readExactly`, to see what framing costs.
    @Test func unframedBaseline() throws {
        let (a, b) = try loopbackPair()
        let chunk = 1 << 20
        let count = 4096
        let reading = JoinableThread { () throws -> Void in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { buffer.deallocate() }
            for _ in 0..<count { try b.readExactly(into: buffer) }
        }
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { payload.deallocate() }
        memset(payload.baseAddress!, 1, chunk)
        let start = nowMilliseconds()
        for _ in 0..<count { try a.writeAll(UnsafeRawBufferPointer(payload)) }
        try reading.join()
        let elapsed = max(1, milliseconds(since: start))
        print(
            "unframed loopback, 1 MiB writes: \(Int(Double(chunk * count) / 1e3 / Double(elapsed))) MB/s over \(elapsed) ms"
        )
    }
}
