import FerryAgent
import FerryControl
import Foundation

/// What `running` means for a KVM guest: the guest program printed its first console line, so
/// it really started (the VMM answering its control socket, all the agent's `running` says, is
/// not enough). Read from the agent's console endpoint, polled every `interval` (10 ms: a KVM
/// guest prints its first line a few milliseconds after its vCPUs start, and the poll is most of
/// the wait between the agent's `running` and the controller's); the agent offers no way to wait
/// for a line.
enum FirstConsoleLine {
    /// What one page of the console says.
    enum Outcome: Equatable {
        /// The guest printed this line (the first of its own, not the VMM's).
        case printed(String)
        /// The VMM says the guest failed before it printed anything.
        case failed(String)
        /// Nothing yet: ask again from `next`.
        case waiting(next: Int)
    }

    /// The decision for one page: the first line with a vCPU is the guest's; a VMM line saying it
    /// failed ends the wait. Pure.
    static func judge(_ page: ConsolePage) -> Outcome {
        for line in page.lines {
            if line.vcpu != nil { return .printed(line.text) }
            if line.text.hasPrefix("ferry vmm: failed") { return .failed(line.text) }
        }
        return .waiting(next: page.next)
    }

    /// Polls guest `name`'s console on its host until the guest's first line (returned), a
    /// failure, or `deadline` (thrown, naming the guest and what the console showed).
    static func wait(
        _ client: AgentClient, name: String, deadline: Date, interval: Duration = .milliseconds(10)
    ) throws -> String {
        var since = 0
        while true {
            let page = try client.get("/v1/guests/\(name)/console?since=\(since)", as: ConsolePage.self)
            switch judge(page) {
            case .printed(let line): return line
            case .failed(let line):
                throw ControlError(.database, "guest \(name) failed before it printed a console line: \(line)")
            case .waiting(let next): since = next
            }
            guard Date() < deadline else {
                throw ControlError(
                    .database,
                    "guest \(name) runs on its host but printed no console line before the boot timeout"
                        + " (its console's cursor is at \(since)): its program did not start")
            }
            let (seconds, attoseconds) = interval.components
            usleep(useconds_t(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
        }
    }
}
