import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import Foundation
import Glibc
import Testing

@testable import FerryMigration
@testable import FerryTransport

/// Connects to `127.0.0.1:port` from `source` (any 127.x.y.z: loopback takes them all, so the
/// destination sees distinct peers).
func connect(from source: String, port: UInt16) throws -> TCPStream {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TransportError(.connect, "socket: \(errno)") }
    func address(_ host: String, _ port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        return address
    }
    var local = address(source, 0)
    var remote = address("127.0.0.1", port)
    let bound = withUnsafePointer(to: &local) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    let connected = withUnsafePointer(to: &remote) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard bound == 0, connected == 0 else {
        let code = errno
        Glibc.close(fd)
        throw TransportError(.connect, "connect from \(source): errno \(code)")
    }
    return TCPStream(adopting: fd)
}

/// Whether a read on `stream` fails within `timeoutMs` (the other side closed it; a timeout
/// is not a failure).
func readFails(_ stream: TCPStream, timeoutMs: Int) -> Bool {
    _ = try? stream.setReceiveTimeout(ms: timeoutMs)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
    defer { buffer.deallocate() }
    do {
        try stream.readExactly(into: buffer)
        return false
    } catch {
        return error.code != .timeout
    }
}

/// Hostile clients that open connections and send one byte every `interval` seconds, never a
/// whole frame, and record when the destination closed each one.
/// `@unchecked Sendable`: `closedAt` and `stopped` are guarded by `lock`.
final class Drippers: @unchecked Sendable {
    private let streams: [TCPStream]
    private let opened: [UInt64]
    private let lock = NSLock()
    private var closedAt: [UInt64?]
    private var stopped = false
    private var thread: BackgroundThread<Void>?

    /// `sources`: the local addresses to connect from, in turn.
    init(port: UInt16, count: Int, interval: Double, sources: [String]) throws {
        var streams: [TCPStream] = []
        var opened: [UInt64] = []
        for index in 0..<count {
            streams.append(try connect(from: sources[index % sources.count], port: port))
            opened.append(MonotonicClock.now())
        }
        self.streams = streams
        self.opened = opened
        closedAt = Array(repeating: nil, count: count)
        thread = BackgroundThread { [self] in
            var lastDrip: UInt64 = 0
            while !locked({ stopped }) {
                let drip = MonotonicClock.now() &- lastDrip >= UInt64(interval * 1e9)
                if drip { lastDrip = MonotonicClock.now() }
                for (index, stream) in self.streams.enumerated() where locked({ closedAt[index] == nil }) {
                    var gone = readFails(stream, timeoutMs: 1)
                    if !gone && drip {
                        gone = (try? [UInt8(0x46)].withUnsafeBytes { try stream.writeAll($0) }) == nil
                    }
                    if gone { locked { closedAt[index] = MonotonicClock.now() } }
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    /// Waits up to `timeout` s for every connection to be closed; the seconds each lived (nil:
    /// still open).
    func lifetimes(timeout: Double) -> [Double?] {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline, locked({ closedAt.contains(nil) }) { Thread.sleep(forTimeInterval: 0.1) }
        locked { stopped = true }
        _ = try? thread?.wait()
        for stream in streams { stream.close() }
        return locked { closedAt }.enumerated().map { index, closed in
            closed.map { Double($0 &- opened[index]) / 1e9 }
        }
    }
}

/// Opens connections that say nothing, as fast as it can, and keeps them open until `close`.
/// `@unchecked Sendable`: `streams` is guarded by `lock`.
final class Burst: @unchecked Sendable {
    private let lock = NSLock()
    private var streams: [TCPStream] = []
    private var thread: BackgroundThread<Int>?

    init(port: UInt16, count: Int, source: String = "127.0.0.1") {
        thread = BackgroundThread { [self] in
            var opened = 0
            for _ in 0..<count {
                guard let stream = try? connect(from: source, port: port) else { continue }
                lock.lock()
                streams.append(stream)
                lock.unlock()
                opened += 1
            }
            return opened
        }
    }

    var opened: Int {
        lock.lock()
        defer { lock.unlock() }
        return streams.count
    }

    func close() -> Int {
        let opened = (try? thread?.wait()) ?? 0
        lock.lock()
        defer { lock.unlock() }
        for stream in streams { stream.close() }
        return opened
    }
}

/// A stranger's HELLO (no key) for a guest of `pages` pages; returns the connection and the
/// type of the answer.
func strangerHello(port: UInt16, pages: UInt64, version: UInt16 = ProtocolLimits.version, name: String = "") throws -> (
    FramedConnection, FrameType
) {
    let connection = FramedConnection(try TCPStream.connect(Endpoint(host: "127.0.0.1", port: port), timeoutMs: 2000))
    try connection.stream.setReceiveTimeout(ms: 5000)
    try connection.send(
        Hello(
            versionMin: version, versionMax: version, pageSize: UInt32(systemPageSize), pageCount: pages,
            vcpuCount: 1, sourceName: "stranger", guestName: name))
    return (connection, try connection.receive().type)
}

func oneShotDestination(
    _ scratch: Scratch, image: String? = nil, security: ConnectionSecurity = .none,
    acceptTimeoutMs: Int = 60_000, runFor: Double = 0
) throws -> (DestinationAgent, UInt16) {
    var options = DestinationOptions(
        listen: try Endpoint.parse("127.0.0.1:0"), imagePath: image ?? scratch.file("received.img"),
        runFor: .seconds(runFor), acceptTimeout: .milliseconds(acceptTimeoutMs), receiveTimeout: .milliseconds(20_000))
    options.security = security
    let destination = DestinationAgent(options: options, logger: testLogger)
    return (destination, try destination.bind())
}

/// Issue 11, findings 2 and 7: connections that have not authenticated or sent their first frame,
/// and HELLOs from strangers, hold nothing a real source needs (Protocol.md section 9.5).
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct HostileAdmissionTests {
    static let key = SharedKey.random()

    /// Finding 2: 42 connections from three addresses each drip a byte a second. A real source
    /// (with and without a key) that starts during the drip migrates, and each drip connection is
    /// closed by its total first-frame deadline (5 s from accept), however often it sends a byte.
    @Test(arguments: [false, true]) func slowDripHoldsNothing(keyed: Bool) throws {
        let scratch = Scratch()
        let security = keyed ? ConnectionSecurity(key: Self.key) : .none
        // The guest runs on there for 7 s: the destination outlives the drip connections' deadlines.
        let (destination, port) = try oneShotDestination(scratch, security: security, runFor: 7)
        let receiving = BackgroundThread { try destination.run() }
        let drip = try Drippers(port: port, count: 42, interval: 1, sources: ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        Thread.sleep(forTimeInterval: 1.5)
        let start = MonotonicClock.now()
        let source = try SourceGuest(scratch: scratch, name: "real", port: port, size: 4 << 20, seed: 21) {
            $0.security = security
        }
        let report = try source.migrate()
        let seconds = MonotonicClock.seconds(since: start)
        #expect(report.verified)
        let lived = drip.lifetimes(timeout: 12)
        #expect(try receiving.wait().report.verified)
        let closed = lived.compactMap { $0 }
        #expect(
            closed.count == lived.count,
            "every drip connection is closed by its deadline, \(lived.count - closed.count) still open")
        #expect(
            closed.allSatisfy { $0 >= 4.5 && $0 < 7.5 },
            "closed after \(closed.map { String(format: "%.1f", $0) }) s, expected about 5 s")
        print(
            "slow drip (key: \(keyed)): the real migration took \(String(format: "%.2f", seconds)) s; drip connections closed after \(String(format: "%.1f", closed.min() ?? 0))-\(String(format: "%.1f", closed.max() ?? 0)) s"
        )
    }

    /// Finding 2: 40 drip connections from the real source's own address (more than the 16 a
    /// peer may have pending) plus a burst of 300 silent connections opened at once, racing a
    /// real source from that same address: the newcomers evict the oldest, and the real source,
    /// whose handshake takes a round trip, gets in.
    @Test(arguments: [false, true]) func burstFromTheSourcesOwnAddressDoesNotLockItOut(keyed: Bool) throws {
        let scratch = Scratch()
        let security = keyed ? ConnectionSecurity(key: Self.key) : .none
        let (destination, port) = try oneShotDestination(scratch, security: security, runFor: 3)
        let receiving = BackgroundThread { try destination.run() }
        let drip = try Drippers(port: port, count: 40, interval: 1, sources: ["127.0.0.1"])
        let burst = Burst(port: port, count: 400)
        // The source connects in the middle of the burst.
        while burst.opened < 150 { Thread.sleep(forTimeInterval: 0.001) }
        let start = MonotonicClock.now()
        let source = try SourceGuest(scratch: scratch, name: "real", port: port, size: 4 << 20, seed: 22) {
            $0.security = security
        }
        let report = try source.migrate()
        let seconds = MonotonicClock.seconds(since: start)
        #expect(report.verified)
        let opened = burst.close()
        _ = drip.lifetimes(timeout: 0)
        #expect(opened == 400)
        #expect(try receiving.wait().report.verified)
        print(
            "burst (key: \(keyed)): \(opened) silent connections and 40 drippers from 127.0.0.1; the real migration took \(String(format: "%.2f", seconds)) s (handshake \(report.setupMs) ms setup)"
        )
    }

    /// Finding 2 as it lost a guest: strangers hold the destination's pending connections with
    /// slow drips and silent connections, and the source's COMMIT is lost at that moment. The
    /// source's handoff queries must still get through (before: closed, "unresolved", and the
    /// destination discarded the verified image: the guest ran nowhere).
    @Test func aLostCommitIsResolvedDuringAFlood() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 8 << 20
        migration.workload = "uniform:5MB/s"
        migration.runFor = 0
        let relay = migration.cutFirst(.commit, going: .toDestination)
        var flood: (Drippers, Burst)?
        migration.beforeSource = { port in
            let drip = try Drippers(port: port, count: 48, interval: 1, sources: ["127.0.0.1", "127.0.0.7"])
            let burst = Burst(port: port, count: 200)
            while burst.opened < 200 { Thread.sleep(forTimeInterval: 0.01) }
            flood = (drip, burst)
        }
        let outcome = try migration.run(in: scratch)
        relay.value?.stop()
        let opened = flood?.1.close() ?? 0
        _ = flood?.0.lifetimes(timeout: 0)
        let report = try outcome.source.get()
        #expect(report.guestLocation == .destination)
        #expect(report.handoff?.contains("first COMMIT was lost") == true, "\(report.handoff ?? "nil")")
        #expect(try outcome.destination.get().report.guestLocation == .destination)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
        print("lost COMMIT under a flood of \(opened) silent and 48 dripping connections: \(report.handoff ?? "")")
    }

    /// Finding 2 with a key: while strangers flood a keyed destination with drip and silent
    /// connections, an authenticated `STATUS_QUERY` (what `ferry status` and a source resolving
    /// its handoff send) is answered at once.
    @Test func keyedStatusQueryIsAnsweredDuringAFlood() throws {
        let scratch = Scratch()
        let security = ConnectionSecurity(key: Self.key)
        let (destination, port) = try oneShotDestination(scratch, security: security, acceptTimeoutMs: 8_000)
        let receiving = BackgroundThread { try destination.run() }
        let drip = try Drippers(port: port, count: 40, interval: 1, sources: ["127.0.0.1", "127.0.0.5"])
        let burst = Burst(port: port, count: 300)
        Thread.sleep(forTimeInterval: 0.2)
        var times: [Double] = []
        for _ in 0..<5 {
            let start = MonotonicClock.now()
            let (connection, answers) = try StatusClient.ask(
                Endpoint(host: "127.0.0.1", port: port), StatusQuery(resolve: false),
                security: security)
            connection.close()
            times.append(MonotonicClock.seconds(since: start))
            #expect(answers.count >= 1)
            Thread.sleep(forTimeInterval: 0.5)
        }
        _ = burst.close()
        _ = drip.lifetimes(timeout: 0)
        #expect(throws: MigrationError.self) { _ = try receiving.wait() }
        print("keyed flood: status queries answered in \(times.map { String(format: "%.3f", $0) }) s")
    }

    /// Finding 2: the source's connection is cut in round 0 while strangers flood the destination
    /// from the relay's own address (40 drippers and a burst of 300): its `RESUME` still gets in,
    /// and the migration resumes and verifies (with and without a key).
    @Test(arguments: [false, true]) func resumeGetsInDuringAFlood(keyed: Bool) throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 32 << 20
        migration.mix = ResumeTests.mostlyData
        migration.workload = "uniform:10MB/s"
        migration.compression = .none
        if keyed {
            migration.sourceSecurity = ConnectionSecurity(key: Self.key)
            migration.destinationSecurity = ConnectionSecurity(key: Self.key)
        }
        let holder = ResumeTests.RelayHolder()
        let flood = FloodHolder()
        migration.route = { port in
            let relay = try Relay(to: port)
            relay.cut(afterBytes: ResumeTests.roundZeroBytes(pages: (32 << 20) / systemPageSize) / 2)
            holder.relay = relay
            flood.drip = try Drippers(port: port, count: 40, interval: 1, sources: ["127.0.0.1"])
            flood.burst = Burst(port: port, count: 300)
            return relay.port
        }
        let outcome = try migration.run(in: scratch)
        let relay = try #require(holder.relay)
        defer { relay.stop() }
        _ = flood.burst?.close()
        _ = flood.drip?.lifetimes(timeout: 0)
        let report = try outcome.source.get()
        #expect(report.verified)
        #expect(relay.cutCount == 1)
        #expect(report.resumes == 1)
        #expect(try outcome.destination.get().report.verified)
        let outage = report.resumeRecords.first?.outageMs ?? -1
        print("RESUME during a flood (key: \(keyed)): resumed after an outage of \(outage) ms")
    }

    final class FloodHolder: @unchecked Sendable {
        var drip: Drippers?
        var burst: Burst?
    }

    /// Finding 7: strangers' HELLOs (no key) do not spend a one-shot destination. One is refused
    /// (wrong version), one vanishes after its ACCEPT, one stalls after its ACCEPT and holds its
    /// connection; the real source that comes next is not refused as busy, and the destination
    /// receives its guest and returns that migration's result.
    @Test func strangersHellosDoNotSpendAOneShotDestination() throws {
        let scratch = Scratch()
        let (destination, port) = try oneShotDestination(scratch)
        let receiving = BackgroundThread { try destination.run() }
        let (refused, refusal) = try strangerHello(port: port, pages: 16, version: 1)
        #expect(refusal == .refuse)
        refused.close()
        let (vanished, vanishedAnswer) = try strangerHello(port: port, pages: 16)
        #expect(vanishedAnswer == .accept, "a stranger's HELLO is accepted tentatively")
        vanished.close()
        let (stalled, stalledAnswer) = try strangerHello(port: port, pages: 1024)
        #expect(stalledAnswer == .accept)
        Thread.sleep(forTimeInterval: 0.3)
        let start = MonotonicClock.now()
        let source = try SourceGuest(scratch: scratch, name: "real", port: port, size: 4 << 20, seed: 23)
        let report = try source.migrate()
        print(
            "stalled stranger's HELLO: the real migration took \(String(format: "%.2f", MonotonicClock.seconds(since: start))) s"
        )
        #expect(report.verified)
        let result = try receiving.wait()
        #expect(result.report.verified)
        #expect(try filesAreIdentical(scratch.file("received.img"), scratch.file("real.src")))
        // The stalled stranger was dropped by its deadline or when the destination finished.
        #expect(readFails(stalled.stream, timeoutMs: 12_000))
        stalled.close()
    }

    /// A stranger's HELLOs that never became migrations leave no trace in what `STATUS`
    /// answers from: a flood of them cannot push real migrations out of the history (the most
    /// recent 256) that a source whose RESUMED was lost relies on.
    @Test func strangersLeaveNoStatusRecords() throws {
        let scratch = Scratch()
        try FileManager.default.createDirectory(atPath: scratch.file("guests"), withIntermediateDirectories: true)
        let server = DestinationServer(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: "", runFor: .seconds(0),
                receiveTimeout: .milliseconds(20_000)),
            directory: scratch.file("guests"), maxSessions: 2, logger: testLogger)
        let port = try server.bind()
        // Two real migrations: the server keeps listening (and answering STATUS) after the first.
        let serving = BackgroundThread { try server.run(count: 2) }
        for index in 0..<20 {
            let (stranger, answer) = try strangerHello(port: port, pages: 16, name: "ghost\(index)")
            #expect(answer == .accept)
            stranger.close()
        }
        let source = try SourceGuest(scratch: scratch, name: "real", port: port, size: 4 << 20, seed: 29)
        let report = try source.migrate()
        #expect(report.verified)
        // The strangers' sessions end as soon as their connections do; give the last a moment.
        var names: [String] = []
        for _ in 0..<50 {
            let (asking, answers) = try StatusClient.ask(try Endpoint.parse("127.0.0.1:\(port)"), StatusQuery())
            asking.close()
            names = answers.filter { $0.state != .unknown }.map(\.guestName)
            if names == ["real"] { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(names == ["real"], "STATUS lists \(names)")
        #expect(try SourceGuest(scratch: scratch, name: "last", port: port, size: 4 << 20, seed: 31).migrate().verified)
        _ = try serving.wait()
    }

    /// Finding 7: a stranger whose HELLO is accepted but who never sends its GUEST_CONFIG is
    /// dropped (its connection closed) 10 s after its ACCEPT, and leaves nothing behind.
    @Test func stalledStrangerIsDroppedAtItsDeadline() throws {
        let scratch = Scratch()
        let (destination, port) = try oneShotDestination(scratch, acceptTimeoutMs: 14_000)
        let receiving = BackgroundThread { try destination.run() }
        let (stalled, answer) = try strangerHello(port: port, pages: 16)
        #expect(answer == .accept)
        let start = MonotonicClock.now()
        try stalled.stream.setReceiveTimeout(ms: 15_000)
        let ending = Result { try stalled.receive() }
        let seconds = MonotonicClock.seconds(since: start)
        #expect(seconds > 9 && seconds < 12, "dropped after \(seconds) s")
        if case .success(let frame) = ending { #expect(frame.type == .abort) }
        stalled.close()
        // While the agent waits, its PATH.partial exists empty: the file its lock is on (ImageLock).
        #expect(
            (try? ImageFile.size(path: scratch.file("received.img.partial"))) ?? 0 == 0, "a stranger leaves no image")
        let failure = #expect(throws: MigrationError.self) { _ = try receiving.wait() }
        #expect(
            failure?.message.contains("established") == true, "the destination waited on: \(failure?.message ?? "")")
    }

    /// Finding 7: a stranger's HELLO claiming a guest larger than half of a small disk promises
    /// none of it: a real guest that fits is accepted while the stranger stalls (the lie would
    /// leave it no room if it were promised).
    @Test(
        .enabled(
            if: Requirement.root.met && FileManager.default.isExecutableFile(atPath: "/usr/bin/mount"),
            "mounting a tmpfs needs root and /usr/bin/mount"))
    func hugeHelloOnASmallDiskReservesNothing() throws {
        let scratch = Scratch()
        let disk = scratch.file("disk")
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        let mount = try Process.run(
            URL(fileURLWithPath: "/usr/bin/mount"), arguments: ["-t", "tmpfs", "-o", "size=24m", "tmpfs", disk])
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0, "mount failed")
        defer { try? Process.run(URL(fileURLWithPath: "/usr/bin/umount"), arguments: ["-l", disk]).waitUntilExit() }
        let (destination, port) = try oneShotDestination(scratch, image: disk + "/received.img")
        let receiving = BackgroundThread { try destination.run() }
        // 20 MiB of the 24: with it promised, the real 8 MiB guest would not fit.
        let (stalled, answer) = try strangerHello(port: port, pages: UInt64((20 << 20) / systemPageSize))
        #expect(answer == .accept)
        let source = try SourceGuest(scratch: scratch, name: "real", port: port, size: 8 << 20, seed: 24)
        let report = try source.migrate()
        #expect(report.verified)
        #expect(try receiving.wait().report.verified)
        #expect(try filesAreIdentical(disk + "/received.img", scratch.file("real.src")))
        stalled.close()
    }

    /// The registry's side of finding 7: a tentative HELLO takes no slot and promises no disk;
    /// `busy` only when established sessions hold every slot; at most `maxSessions + 8` tentative.
    @Test func tentativeSessionsTakeNoSlot() {
        let registry = SessionRegistry(maxSessions: 1)
        for _ in 0..<registry.maxTentative { #expect(registry.admitTentative() == .admitted) }
        #expect(registry.admitTentative() == .crowded)
        #expect(registry.activeSessions == 0 && registry.promisedDiskBytes == 0)
        #expect(registry.establish())
        #expect(!registry.establish(), "the one slot is taken by the first established")
        #expect(registry.admitTentative() == .busy)
        registry.unestablish()
        #expect(registry.activeSessions == 0 && registry.tentativeSessions == registry.maxTentative)
    }
}

/// The pure policy of Protocol.md section 9.5.
@Suite struct PendingAdmissionTests {
    @Test func aPeerAtItsCapEvictsItsOwnOldest() {
        var pool = PendingAdmission(total: 64, perPeer: 3)
        let first = pool.arrive(peer: "a")
        _ = pool.arrive(peer: "b")
        _ = pool.arrive(peer: "a")
        _ = pool.arrive(peer: "a")
        let fourth = pool.arrive(peer: "a")
        #expect(fourth.evicted == first.id)
        #expect(pool.count(peer: "a") == 3 && pool.count == 4)
        let leftEvicted = pool.leave(first.id)
        let leftPending = pool.leave(fourth.id)
        #expect(!leftEvicted, "an evicted connection is no longer pending")
        #expect(leftPending)
    }

    @Test func aFullPoolEvictsTheOldestOfTheBusiestPeer() {
        var pool = PendingAdmission(total: 4, perPeer: 4)
        let realSource = pool.arrive(peer: "10.0.0.1")
        let flood = (0..<3).map { _ in pool.arrive(peer: "10.0.0.66").id }
        let newcomer = pool.arrive(peer: "10.0.0.2")
        #expect(newcomer.evicted == flood[0], "the flood's oldest goes, not the real source")
        let next = pool.arrive(peer: "10.0.0.3")
        #expect(next.evicted == flood[1])
        let realLeft = pool.leave(realSource.id)
        #expect(realLeft)
    }

    /// A connection whose whole first frame has arrived is about to leave: it is passed over.
    @Test func aConnectionWithItsFrameInIsNotEvicted() {
        var pool = PendingAdmission(total: 64, perPeer: 2)
        let source = pool.arrive(peer: "a")
        let dripper = pool.arrive(peer: "a")
        let next = pool.arrive(peer: "a") { $0 == source.id }
        #expect(next.evicted == dripper.id, "the dripper goes, the source whose HELLO is in stays")
        let last = pool.arrive(peer: "a") { _ in true }
        #expect(last.evicted == nil && pool.count == 3)
    }

    /// One in the authentication exchange goes only after those that made no progress.
    @Test func anAuthenticatingConnectionGoesLast() {
        var pool = PendingAdmission(total: 64, perPeer: 2)
        let keyed = pool.arrive(peer: "a")
        pool.progress(keyed.id)
        let silent = pool.arrive(peer: "a")
        let next = pool.arrive(peer: "a")
        #expect(next.evicted == silent.id)
        pool.progress(next.id)
        let last = pool.arrive(peer: "a")
        #expect(last.evicted == keyed.id, "when all progressed, the longest-waiting")
    }

    @Test func everyNewcomerIsTaken() {
        var pool = PendingAdmission(total: 2, perPeer: 2)
        var evicted = 0
        for _ in 0..<100 where pool.arrive(peer: "x").evicted != nil { evicted += 1 }
        #expect(evicted == 98 && pool.count == 2)
    }

    /// The dispatcher's look into a socket: a whole frame waits (header and payload), or not yet.
    @Test func wholeFrameIsSeenWithoutReadingIt() throws {
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        defer { listener.close() }
        let client = FramedConnection(
            try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000))
        let accepted = try listener.accept(timeoutMs: 2000)
        defer {
            client.close()
            accepted.close()
        }
        let hello = Hello(pageSize: 4096, pageCount: 16, vcpuCount: 1, sourceName: "s", guestName: "g")
        let bytes = hello.encodedPayload()
        var header = [UInt8](repeating: 0, count: FrameHeader.size)
        header.withUnsafeMutableBytes {
            FrameHeader(.hello, length: bytes.count, sequence: 0).encode(to: $0.baseAddress!)
        }
        try (header + bytes.dropLast()).withUnsafeBytes { try client.stream.writeAll($0) }
        Thread.sleep(forTimeInterval: 0.05)
        #expect(!ConnectionDispatcher.holdsWholeFrame(accepted), "one byte is missing")
        try [bytes.last!].withUnsafeBytes { try client.stream.writeAll($0) }
        Thread.sleep(forTimeInterval: 0.05)
        #expect(ConnectionDispatcher.holdsWholeFrame(accepted))
        let frame = try FramedConnection(accepted).receive()
        #expect(frame.type == .hello, "peeking consumed nothing")
    }

    @Test func peerAddresses() {
        #expect(PendingAdmission.peerAddress("127.0.0.1:4000") == "127.0.0.1")
        #expect(PendingAdmission.peerAddress("[::1]:4000") == "::1")
        #expect(PendingAdmission.peerAddress("unknown peer") == "unknown peer")
    }

    /// A total deadline: the connection is closed when it passes, however often bytes arrive.
    @Test func deadlinesCloseOnTimeAndDisarm() throws {
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        defer { listener.close() }
        let client = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
        let kept = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
        let accepted = try listener.accept(timeoutMs: 2000)
        let other = try listener.accept(timeoutMs: 2000)
        let deadlines = ConnectionDeadlines()
        let start = MonotonicClock.now()
        _ = deadlines.arm(accepted, seconds: 0.5)
        let token = deadlines.arm(other, seconds: 0.5)
        #expect(deadlines.disarm(token))
        let dripping = BackgroundThread {
            for _ in 0..<30 {
                _ = try? [UInt8(1)].withUnsafeBytes { try client.writeAll($0) }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        while !readFails(accepted, timeoutMs: 2000) {}
        let seconds = MonotonicClock.seconds(since: start)
        // Bytes arrive for 3 s: closed well before they stop means the deadline closed it (the
        // upper bound leaves a loaded machine's scheduling delays room).
        #expect(seconds >= 0.45 && seconds < 2, "closed after \(seconds) s")
        #expect(!other.isClosed)
        try dripping.wait()
        deadlines.stop()
        for stream in [client, kept, other] { stream.close() }
    }
}
