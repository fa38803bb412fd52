import Foundation

extension VirtualMachineMonitor {
    /// `resolve`: ends an `unresolved` handoff with the destination's answer, which only the
    /// destination (its agent, or `ferry status` against it) can give; this process never guesses.
    /// `guest_location: "destination"`: the guest runs there; this copy is dropped and the process
    /// exits 0 as `left`. `"source"`: the destination does not have it (it never read COMMIT and
    /// discarded the guest); the guest continues here as it was before the migration (running,
    /// or paused if it was).
    func resolve(_ request: ControlRequest) throws(ControlFailure) -> Outcome {
        let location = try request.string("guest_location")
        guard let location, ["destination", "source"].contains(location) else {
            throw ControlFailure(
                .badRequest, field: "guest_location",
                "give where the destination says the guest is: \"destination\" or \"source\"")
        }
        return try serialized { () throws(ControlFailure) -> Outcome in
            let guest = try runningGuest()
            let (state, migration) = condition.withLock { (self.state, self.migration) }
            guard state == .unresolved else {
                throw ControlFailure(.wrongState, "resolve needs the guest unresolved; it is \(state.rawValue)")
            }
            if location == "destination" {
                let reason = "resolved: the destination \(migration.map { "\($0.destination) " } ?? "")runs the guest"
                return (["state": "left"], { self.left(reason) })
            }
            let paused = migration?.paused ?? false
            if !paused { guest.migratable.resume() }
            let next: VMMState = paused ? .paused : .running
            enter(next, reason: "resolved: the destination does not have the guest; it continues here")
            return (["state": .string(next.rawValue)], nil)
        }
    }
}
