import FerryProtocol
import FerryTransport
import Foundation
import Glibc

/// The frame receive path as the destination runs it: `FramedConnection.receive(direct:
/// .pageBatch)`, then the payload read the way `PageSink` reads it (the 8-byte batch header, the
/// descriptor table, then a scatter read of the pages into place, one vector per page), over
/// loopback TCP. A sender thread writes pre-built frames in large writes (only the sequence
/// numbers change), so the receiving (timed) thread is what bounds the rate. `receive copy` is
/// the same with `receive()` into the connection's own buffer (the path of every other frame).
struct FrameReceiveBenchmarks {
    /// Pages per PAGE_BATCH frame: one page shows the per-frame cost, 256 the bulk rate.
    static let pagesPerFrame = [1, 16, 256]
    static func label(_ pages: Int, copy: Bool = false) -> String {
        "receive \(copy ? "copy" : "direct") \(pages) page\(pages == 1 ? "" : "s")"
    }
    static var labels: [String] { pagesPerFrame.map { label($0) } + [label(1, copy: true)] }
    /// Payload bytes received per repetition.
    static let bytesPerRepetition = 64 << 20

    let options: Options
    var table = Table(
        ["benchmark", "GB/s median (min–max)", "frames/s median", "ns/frame", "CPU ns/frame", "cpu%"], leftAligned: [0])

    init(options: Options) { self.options = options }

    mutating func run() throws {
        for pages in Self.pagesPerFrame where options.selects(Self.label(pages)) {
            try receive(pagesPerFrame: pages, copy: false)
        }
        if options.selects(Self.label(1, copy: true)) { try receive(pagesPerFrame: 1, copy: true) }
    }

    private mutating func receive(pagesPerFrame pages: Int, copy: Bool) throws {
        let pageSize = 4096
        let tableBytes = 16 * pages
        let payloadBytes = 8 + tableBytes + pages * pageSize
        let frameBytes = FrameHeader.size + payloadBytes
        let framesPerRepetition = Self.bytesPerRepetition / payloadBytes
        let totalFrames = framesPerRepetition * (options.repetitions + 1)  // one warm-up

        let listener = try TCPListener(Endpoint(host: "127.0.0.1", port: 0))
        let clientStream = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
        let serverStream = try listener.accept(timeoutMs: 2000)
        try clientStream.setSendTimeout(ms: 10_000)  // a receiver that gave up must not hang the run
        let receiver = FramedConnection(serverStream)

        // The sender: frames built once into a ~4 MiB chunk, sequence numbers rewritten per write.
        let framesPerChunk = max(1, (4 << 20) / frameBytes)
        let sender = Thread {
            let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: framesPerChunk * frameBytes, alignment: 16)
            defer { chunk.deallocate() }
            for index in 0..<chunk.count { chunk[index] = UInt8(truncatingIfNeeded: index &* 131) }
            var sequence: UInt64 = 0
            while sequence < UInt64(totalFrames) {
                let count = min(framesPerChunk, totalFrames - Int(sequence))
                for frame in 0..<count {
                    FrameHeader(.pageBatch, length: payloadBytes, sequence: sequence).encode(
                        to: chunk.baseAddress! + frame * frameBytes)
                    sequence += 1
                }
                do {
                    try clientStream.writeAll(UnsafeRawBufferPointer(rebasing: chunk[0..<(count * frameBytes)]))
                } catch {
                    return
                }
            }
        }
        sender.start()
        defer { clientStream.close() }

        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: pages * pageSize, alignment: 4096)
        let batchTable = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 + tableBytes, alignment: 16)
        let vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: pages)
        defer {
            memory.deallocate()
            batchTable.deallocate()
            vectors.deallocate()
        }
        memset(memory.baseAddress!, 1, memory.count)  // faulted in, as guest memory is
        var checksum = 0
        func receiveFrames() throws {
            for _ in 0..<framesPerRepetition {
                if copy {
                    let frame = try receiver.receive()
                    checksum &+= Int(frame.payload[payloadBytes - 1])
                    continue
                }
                guard case .direct(_, _, let length) = try receiver.receive(direct: .pageBatch), length == payloadBytes
                else {
                    fatalError("expected a direct PAGE_BATCH of \(payloadBytes) bytes")
                }
                try receiver.readDirect(into: UnsafeMutableRawBufferPointer(rebasing: batchTable[0..<8]))
                try receiver.readDirect(into: UnsafeMutableRawBufferPointer(rebasing: batchTable[8...]))
                for page in 0..<pages {
                    vectors[page] = iovec(iov_base: memory.baseAddress! + page * pageSize, iov_len: pageSize)
                }
                try receiver.readDirect(vectors: vectors)
                checksum &+= Int(memory[memory.count - 1])
            }
        }
        let samples = try measure(repetitions: options.repetitions, receiveFrames)
        if checksum == 1 { emit("") }  // keeps the reads observable
        let bytes = Double(framesPerRepetition * frameBytes)
        table.add([
            "\(Self.label(pages, copy: copy)) (\(payloadBytes) B payload)",
            rateRange(samples) { bytes / $0 / 1e9 },
            short(Double(framesPerRepetition) / samples.median),
            fixed(samples.median / Double(framesPerRepetition) * 1e9, 0),
            fixed(samples.cpuSeconds.sorted()[samples.cpuSeconds.count / 2] / Double(framesPerRepetition) * 1e9, 0),
            samples.cpuPercent.map { fixed($0, 0) } ?? "-",
        ])
    }
}
