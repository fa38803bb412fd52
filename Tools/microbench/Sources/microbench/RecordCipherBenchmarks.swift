import Crypto
import FerryProtocol
import FerryTransport
import Foundation
import Glibc

/// The record layer's cost (Protocol.md 9.3): sealing and opening 64 KiB records on one core with
/// swift-crypto's one-shot API (nonce from a counter, 4-byte length as associated data, a new
/// `Data` per record) — the baseline the record layer started from; it now seals in place through
/// libcrypto (`CAEAD`) — and 1 MiB frames through a `FramedConnection` over loopback TCP, plain vs
/// each cipher (sender and receiver threads): that row measures the record layer as it is.
struct RecordCipherBenchmarks {
    static let ciphers: [RecordCipher] = [.aes256GCM, .chacha20Poly1305]
    static var labels: [String] {
        ciphers.flatMap { ["seal \($0)", "open \($0)"] }
            + (["none"] + ciphers.map(\.description)).map { "framed \($0)" }
    }

    let options: Options
    var table = Table(["benchmark", "GB/s median (min–max)", "cpu%"], leftAligned: [0])
    /// As `RecordWriter` seals (RECORD_KIB=256 shows what the protocol's largest records cost).
    static let recordBytes = Int(ProcessInfo.processInfo.environment["RECORD_KIB"] ?? "64")! * 1024
    static let records = (64 << 20) / recordBytes  // 64 MiB per repetition

    init(options: Options) { self.options = options }

    mutating func run() throws {
        let key = SymmetricKey(size: .bits256)
        let plain = Data((0..<Self.recordBytes).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 9) })
        let header: [UInt8] = [0, 0, 4, 0]
        for cipher in Self.ciphers {
            var counter: UInt64 = 0
            func nonce() -> [UInt8] {
                counter += 1
                return [0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: counter >> (8 * $0)) }
            }
            func seal() throws -> Data {
                switch cipher {
                case .aes256GCM:
                    return try AES.GCM.seal(
                        plain, using: key, nonce: AES.GCM.Nonce(data: nonce()), authenticating: header
                    ).combined!
                default:
                    return try ChaChaPoly.seal(
                        plain, using: key, nonce: ChaChaPoly.Nonce(data: nonce()), authenticating: header
                    ).combined
                }
            }
            let sealed = try seal()
            if options.selects("seal \(cipher)") {
                var samples = Samples()
                for _ in 0..<options.repetitions {
                    samples.add(try timed { for _ in 0..<Self.records { _ = try seal() } })
                }
                add("seal \(cipher)", samples, bytes: Self.recordBytes * Self.records)
            }
            if options.selects("open \(cipher)") {
                var samples = Samples()
                var buffer = sealed
                for _ in 0..<options.repetitions {
                    samples.add(
                        try timed {
                            for _ in 0..<Self.records {
                                // As RecordReader: the nonce slot is rewritten in place, then the box opens.
                                buffer.replaceSubrange(0..<12, with: sealed.prefix(12))
                                switch cipher {
                                case .aes256GCM:
                                    _ = try AES.GCM.open(
                                        AES.GCM.SealedBox(combined: buffer), using: key, authenticating: header)
                                default:
                                    _ = try ChaChaPoly.open(
                                        ChaChaPoly.SealedBox(combined: buffer), using: key, authenticating: header)
                                }
                            }
                        })
                }
                add("open \(cipher)", samples, bytes: Self.recordBytes * Self.records)
            }
        }
        for cipher in [RecordCipher.none] + Self.ciphers where options.selects("framed \(cipher)") {
            try framed(cipher)
        }
    }

    private mutating func framed(_ cipher: RecordCipher) throws {
        let listener = try TCPListener(Endpoint(host: "127.0.0.1", port: 0))
        let clientStream = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
        let serverStream = try listener.accept(timeoutMs: 2000)
        let client = FramedConnection(clientStream)
        let server = FramedConnection(serverStream)
        let shared = SharedKey.random()
        try clientStream.setSendTimeout(ms: 10_000)  // a receiver that gave up must not hang the run
        if cipher != .none {
            let handshakeDone = DispatchSemaphore(value: 0)
            let serverSide = Thread {
                _ = try? server.authenticate(asServer: ConnectionSecurity(key: shared), firstFrame: server.receive())
                handshakeDone.signal()
            }
            serverSide.start()
            try client.authenticate(asClient: ConnectionSecurity(key: shared, encrypt: true, ciphers: [cipher]))
            try client.send(Note(text: "go"))
            handshakeDone.wait()  // until the server thread has read the NOTE: one receiving thread at a time
        }
        let frameBytes = 1 << 20
        let frames = 64
        let payload = [UInt8](repeating: 0x5A, count: frameBytes)
        let receiver = Thread {
            let target = UnsafeMutableRawBufferPointer.allocate(byteCount: frameBytes, alignment: 4096)
            defer { target.deallocate() }
            while true {
                guard case .direct(_, _, let length)? = try? server.receive(direct: .pageBatch) else { return }
                var vector = iovec(iov_base: target.baseAddress, iov_len: length)
                guard
                    (try? withUnsafeMutablePointer(to: &vector) {
                        try server.readDirect(vectors: UnsafeMutableBufferPointer(start: $0, count: 1))
                    }) != nil
                else { return }
            }
        }
        receiver.start()
        var samples = Samples()
        for _ in 0..<options.repetitions {
            try samples.add(
                timed {
                    for _ in 0..<frames { try payload.withUnsafeBytes { try client.send(.pageBatch, payload: $0) } }
                })
        }
        client.close()
        add("framed \(cipher) (1 MiB frames, loopback TCP, sender side)", samples, bytes: frameBytes * frames)
    }

    private mutating func add(_ label: String, _ samples: Samples, bytes: Int) {
        table.add([
            label, rateRange(samples) { Double(bytes) / $0 / 1e9 }, samples.cpuPercent.map { fixed($0, 0) } ?? "-",
        ])
    }
}
