import FerryHostModel
import FerryMigration
import FerryTransport
import Foundation
import Glibc
import Logging

extension VirtualMachineMonitor {
    /// Guest memory that a received guest runs on stays the destination session's mapping until
    /// the VMM releases it; this is how long the engine is told to let it run (ten years).
    static let incomingRunFor = Duration.seconds(315_360_000)

    /// Binds the migration listener and waits, on a thread of its own, for one source.
    func listenForIncoming(_ endpoint: Endpoint, keyFile: String?, name: FerryHostModel.GuestName?) throws(VMMError) {
        let security: ConnectionSecurity
        do { security = try keyFile.map { ConnectionSecurity(key: try SharedKey.load(path: $0)) } ?? .none } catch {
            server?.close()
            throw VMMError(.configuration, "--key-file: \(error)", cause: error)
        }
        let paused = configuration.startPaused
        let capture = IncomingCapture(startPaused: paused) { [weak self] guest in
            guard let monitor = self else { return }
            // At once, on the engine's thread: the guest was paused on the source.
            if paused { _ = guest.migratable.pause() }
            // Off the session's thread: the engine calls this inside the blackout.
            let thread = Thread { monitor.received(guest, name: name) }
            thread.start()
        }
        self.capture = capture
        var options = DestinationOptions(
            listen: endpoint, imagePath: configuration.imagePath, force: true, runFor: Self.incomingRunFor,
            name: Self.hostName(), resumeTimeout: configuration.incomingResumeTimeout,
            guestKinds: capture.wrap(.ferry))
        options.security = security
        options.cancellation = incomingCancellation
        options.consoleLine = { [console] line in console.append(line.text, vcpu: line.vcpu) }
        let agent = DestinationAgent(options: options, logger: logger) { [weak self] progress in
            guard let self else { return }
            self.condition.withLock { self.incomingProgress = progress }
            self.broadcast("progress", ["role": "destination", "migration": self.incomingStatus()])
        }
        let port: UInt16
        do { port = try agent.bind() } catch {
            server?.close()
            throw VMMError(
                .configuration, "cannot listen for the incoming migration on \(endpoint): \(error)", cause: error)
        }
        condition.withLock {
            incomingAgent = agent
            incomingAddress = "\(endpoint.host):\(port)"
            state = .migratingIn
        }
        let thread = Thread { [weak self] in
            do { _ = try agent.run() } catch { self?.incomingFailed(error) }
        }
        thread.name = "ferry-vmm-incoming"
        thread.start()
    }

    private func received(_ guest: RunningGuest, name: FerryHostModel.GuestName?) {
        let migratable = guest.migratable
        let fallback = try? FerryHostModel.GuestName("incoming")
        guard let guestName = name ?? fallback else { return }
        let spec = GuestSpecification(
            name: guestName, kind: guest.kind, vcpus: migratable.vcpus, memoryBytes: migratable.memory.size,
            workload: migratable.configuration.parameters, seed: migratable.configuration.seed)
        condition.withLock {
            self.guest = guest
            self.specification = spec
        }
        if configuration.startPaused {
            enter(.paused, reason: "received by live migration; paused, as it was on the source")
        } else {
            enter(.running, reason: "received by live migration")
        }
        startProgressTicker()
    }

    private func incomingFailed(_ error: any Error) {
        let hasGuest = condition.withLock { guest != nil }
        guard !hasGuest else {
            logger.error("the destination session ended with an error", metadata: ["vmm.error": "\(error)"])
            return
        }
        enter(.failed, reason: "the incoming migration failed: \(error)")
        exit(1)
    }

    /// `status`'s `incoming` while a migration arrives.
    func incomingStatus() -> JSONValue {
        condition.withLock {
            var fields: [String: JSONValue] = [
                "listen": JSONValue(incomingAddress),
                "established": .bool(incomingAgent?.established ?? false),
            ]
            if let progress = incomingProgress {
                fields["round"] = JSONValue(progress.round)
                fields["bytes_received"] = JSONValue(progress.wireBytes)
                fields["elapsed_s"] = JSONValue(progress.elapsedSeconds)
            }
            return .object(fields)
        }
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
