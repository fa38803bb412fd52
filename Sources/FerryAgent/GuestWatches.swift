import FerryHostModel
import FerryInventory
import FerryVMM
import Foundation
import Logging
import Synchronization

/// One `watch` connection per running guest's `ferry vmm`, each on a thread of its own (a
/// blocking read, never the cooperative pool). When a connection closes, the agent looks at
/// the process (`HostGuests.connectionClosed`): gone without having said it stops, suspends or
/// leaves, the guest is `crashed`.
final class GuestWatches: Sendable {
    private struct Watch: Sendable {
        var client: VMMControlClient
        var facts: ProcessFacts
    }

    private let watches = Mutex<(open: [GuestID: Watch], stopped: Bool)>(([:], false))
    let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    /// Whether a watch is open on this process.
    func isWatching(_ id: GuestID, _ facts: ProcessFacts) -> Bool {
        watches.withLock { $0.open[id]?.facts == facts }
    }

    var count: Int { watches.withLock { $0.open.count } }

    /// Opens a watch on the record's process unless one is open on it; blocks for the connect.
    func open(_ record: GuestRecord, owner: HostGuests) {
        guard let facts = record.process, !isWatching(record.id, facts) else { return }
        guard let client = try? VMMControlClient(path: facts.controlSocket, timeoutSeconds: 3) else { return }
        let state: String
        do { state = try client.call("watch")["state"]?.stringValue ?? "?" } catch {
            client.close()
            return
        }
        client.setReceiveTimeout(seconds: 0)  // events may be minutes apart
        let (accepted, replaced) = watches.withLock { watches -> (Bool, Watch?) in
            guard !watches.stopped else { return (false, nil) }
            defer { watches.open[record.id] = Watch(client: client, facts: facts) }
            return (true, watches.open[record.id])
        }
        replaced?.client.close()
        guard accepted else {
            client.close()
            return
        }
        let id = record.id
        let name = record.name
        let thread = Thread { [weak owner] in
            var last = state
            while let event = try? client.next() {
                if event["event"]?.stringValue == "state", let next = event["state"]?.stringValue { last = next }
            }
            let current = self.watches.withLock { watches -> Bool in
                guard watches.open[id]?.client === client else { return false }
                watches.open[id] = nil
                return !watches.stopped
            }
            guard current, let owner else { return }
            owner.connectionClosed(id: id, name: name, facts: facts, lastState: last)
        }
        thread.name = "ferry-agent-watch"
        thread.start()
        logger.debug("watching", metadata: ["guest.name": "\(name)", "guest.pid": "\(facts.pid)"])
    }

    /// Closes every watch (the agent stops; guests run on).
    func closeAll() {
        let open = watches.withLock { watches -> [Watch] in
            watches.stopped = true
            defer { watches.open = [:] }
            return Array(watches.open.values)
        }
        for watch in open { watch.client.close() }
    }
}
