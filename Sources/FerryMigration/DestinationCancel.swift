import FerryProtocol
import FerryTransport
import Logging

/// An operator's cancel on the destination (`DestinationOptions.cancellation`): before `COMMIT`
/// is read, the session sends the source `ABORT` (reason `cancelled`) and discards its partial
/// image; after, the guest is this side's and runs as usual.
extension DestinationSession {
    /// How long a session that sent `VERIFIED` still waits, after a cancel, for the source's
    /// decision: the source writes `COMMIT` (or `ABORT`) right after reading `VERIFIED`, and
    /// once it may have written `COMMIT` only reading it tells where the guest is.
    static let cancelGraceMs = 2_000

    /// Registers the handler that wakes the session's waits on a cancel: reads on its
    /// connections end (writes still go out: the `ABORT`), and its waits for a returning
    /// source look at the cancel. Once `VERIFIED` is sent the reads are left alone
    /// (`awaitCommit` waits for the source's decision, `cancelGraceMs` at most).
    func watchCancel() {
        guard let cancellation = options.cancellation else { return }
        let (live, registry, verified) = (live, registry, verifiedSent)
        cancelHandler = cancellation.onCancel {
            if !verified.value { live.stopReading() }
            registry.wake()
            registry.handoffs.wake()
        }
    }

    func stopWatchingCancel() {
        if let cancelHandler { options.cancellation?.removeHandler(cancelHandler) }
        cancelHandler = nil
    }

    /// The cancel as this session's failure, if there was one.
    func cancelled(during phase: String) -> MigrationError? {
        options.cancellation?.error(during: phase, guest: .notHere)
    }

    /// The source's answer to `VERIFIED` on `current`: waits in short slices so that a cancel
    /// is seen; after a cancel, waits `cancelGraceMs` more, then gives up (throws the cancel).
    func receiveDecision(on current: FramedConnection) throws -> ReceivedFrame {
        let sliceMs = 250
        try? current.stream.setReceiveTimeout(ms: sliceMs)
        defer { try? current.stream.setReceiveTimeout(ms: options.receiveTimeoutMs) }
        var waitedMs = 0
        var cancelledMs = 0
        while true {
            do {
                return try current.receive()
            } catch {
                if error.code != .timeout || current.hasFailedReceiving { throw error }
            }
            waitedMs += sliceMs
            if options.cancellation?.isCancelled == true {
                cancelledMs += sliceMs
                if cancelledMs >= Self.cancelGraceMs, let failure = cancelled(during: "the handoff (awaiting COMMIT)") {
                    throw failure
                }
            }
            if waitedMs >= options.receiveTimeoutMs {
                throw TransportError(.timeout, "no COMMIT or ABORT within \(waitedMs) ms after VERIFIED")
            }
        }
    }
}
