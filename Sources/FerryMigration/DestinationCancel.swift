import FerryProtocol
import FerryTransport
import Logging

/// An operator's cancel on the destination (`DestinationOptions.cancellation`): before `COMMIT`
/// is read, the session sends the source `ABORT` (reason `cancelled`) and discards its partial
/// image; after, the guest is this side's and runs as usual.
extension DestinationSession {
    /// Registers the handler that wakes the session's waits on a cancel: reads on its
    /// connections end (writes still go out: the `ABORT`), and its waits for a returning
    /// source look at the cancel. Once `VERIFIED` is sent the reads are left alone: the source
    /// decides, and the session waits for its `COMMIT` or `ABORT` as if there were no cancel
    /// (Protocol.md section 6), so a cancel never leaves the guest running nowhere.
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

    /// The source's answer to `VERIFIED` on `current`. A cancel does not shorten this wait: once
    /// `VERIFIED` is out the source may already have written `COMMIT`, and only reading it (or
    /// the source coming back to resolve) tells where the guest is.
    func receiveDecision(on current: FramedConnection) throws -> ReceivedFrame {
        try current.receive()
    }
}
