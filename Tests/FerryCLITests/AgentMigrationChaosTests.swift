import FerryAgent
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// Issue 14's chaos loop for migrations: a guest migrates back and forth between two agents, and
/// at a random moment of each migration the source agent, the destination agent or both are
/// killed with `kill -9` and started again. After each iteration exactly one agent lists the
/// guest, running, and exactly one `ferry vmm` runs it: the one that agent records.
@Suite(
    .serialized, .tags(.slow), .skippable(.slow), .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentMigrationChaosTests {
    static let iterations = 50

    enum Victim: String, CaseIterable { case source, destination, both }

    /// The guest's state on agents `from` and `to` (nil: not listed).
    static func states(_ from: GuestAgentFixture, _ to: GuestAgentFixture) throws -> (String?, String?) {
        (
            try from.list().first { $0.specification.name.value == "c1" }?.state,
            try to.list().first { $0.specification.name.value == "c1" }?.state
        )
    }

    static func migration(_ id: String, on agent: GuestAgentFixture) throws -> MigrationResource {
        try MigrationResource.decode(
            String(decoding: try agent.client().send("GET", "/v1/migrations/\(id)").body, as: UTF8.self))
    }

    /// What the guest's `ferry vmm` process `pid` answers to `hello` on its control socket (found
    /// from the `--state-dir` on its command line): its state, or why there is none.
    static func vmmState(_ pid: pid_t, id: String) -> String {
        guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "gone" }
        let words = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard let at = words.firstIndex(of: "--state-dir"), at + 1 < words.count else { return "no --state-dir" }
        do {
            let client = try VMMControlClient(path: "\(words[at + 1])/\(id).sock", timeoutSeconds: 2)
            defer { client.close() }
            return try client.call("hello")["state"]?.stringValue ?? "no state"
        } catch {
            return "no answer (\(error))"
        }
    }

    @Test func killingAgentsDuringMigrationsLosesAndDoublesNothing() throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        print("migration chaos: seed \(seed)")
        var random = SplitMix64(seed: seed)
        let pair = try AgentPair("mx")
        let guest = try pair.runGuest("c1", on: pair.source, memoryMiB: 32, workload: "idle")
        let agents = [pair.source, pair.destination]
        var owner = 0
        var killed: [Victim: Int] = [:]
        var outcomes: [String: Int] = [:]
        var worstSettle = 0.0
        var worstStray = 0.0
        let began = Date()
        for iteration in 1...Self.iterations {
            let (from, to) = (agents[owner], agents[1 - owner])
            let request =
                #"{"guest":"c1","to":"\#(to.url)","options":{"max_bandwidth_bytes_per_s":200000,"downtime_ms":300}}"#
            let started = try AgentPair.postRetryingBusy(from, "/v1/migrations", body: Array(request.utf8))
            try #require(
                started.status == 201, "iteration \(iteration): \(String(decoding: started.body, as: UTF8.self))")
            let id = try MigrationResource.decode(String(decoding: started.body, as: UTF8.self)).id
            usleep(UInt32.random(in: 0...1_300_000, using: &random))
            let seen = try Self.states(from, to)
            #expect(AgentPair.oneOwner(seen), "iteration \(iteration) before the kill: \(seen)")

            let victim = Victim.allCases.randomElement(using: &random)!
            killed[victim, default: 0] += 1
            let victims = victim == .both ? [from, to] : victim == .source ? [from] : [to]
            for agent in victims { agent.kill9() }
            usleep(UInt32.random(in: 0...300_000, using: &random))
            for agent in victims { try agent.start(port: agent.port) }  // where its peer will look

            // Settle: poll both until neither lists the guest as migrating; one owner at each poll.
            let settling = Date()
            var now = try Self.states(from, to)
            while [now.0, now.1].contains(where: { $0?.hasPrefix("migrating") == true }),
                Date().timeIntervalSince(settling) < 40
            {
                #expect(AgentPair.oneOwner(now), "iteration \(iteration) settling: \(now)")
                usleep(50_000)
                now = try Self.states(from, to)
            }
            worstSettle = max(worstSettle, Date().timeIntervalSince(settling))
            let listed = [now.0, now.1].compactMap { $0 }
            try #require(
                listed == ["running"],
                "iteration \(iteration) (\(victim) killed): from \(now.0 ?? "-"), to \(now.1 ?? "-")")
            owner = now.0 != nil ? owner : 1 - owner
            let recorded = try agents[owner].view("c1").pid
            var vmms = GuestAgentFixture.vmmProcesses(id: guest.id)
            // A process that was about to take the guest when its agent was killed (an incoming
            // one spawned but not yet recorded) ends on its own deadline; meanwhile it must not
            // run the guest: only the owner's process may say running or paused.
            let strays = Date()
            var strayStates: [pid_t: String] = [:]
            while vmms != [recorded].compactMap({ $0 }), vmms.contains(where: { $0 == recorded }),
                Date().timeIntervalSince(strays) < 30
            {
                for pid in vmms where pid != recorded {
                    let state = Self.vmmState(pid, id: guest.id)
                    strayStates[pid] = state
                    #expect(
                        !["running", "paused"].contains(state),
                        "iteration \(iteration): vmm \(pid) runs the guest (\(state)) beside the owner's \(recorded ?? -1)"
                    )
                }
                usleep(100_000)
                vmms = GuestAgentFixture.vmmProcesses(id: guest.id)
            }
            worstStray = max(worstStray, strayStates.isEmpty ? 0 : Date().timeIntervalSince(strays))
            try #require(
                vmms.count == 1 && vmms.first == recorded,
                "iteration \(iteration): vmm processes \(vmms), the owner records \(recorded ?? -1); strays \(strayStates)"
            )
            // The source's migration resource ends as what happened: unresolved is not an end.
            var final = try Self.migration(id, on: from)
            for _ in 0..<100 where !final.status.isFinal || final.status == .unresolved {
                usleep(100_000)
                final = try Self.migration(id, on: from)
            }
            #expect(
                final.status.isFinal && final.status != .unresolved
                    && final.guestLocation == (owner == agents.firstIndex { $0 === from } ? "source" : "destination"),
                "iteration \(iteration): \(final.json)")
            outcomes[final.status.rawValue, default: 0] += 1
        }
        let kills = Victim.allCases.map { "\($0.rawValue) \(killed[$0, default: 0])" }.joined(separator: ", ")
        let ends = outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let seconds = String(format: "%.0f", Date().timeIntervalSince(began))
        print(
            "migration chaos: \(Self.iterations) migrations with kill -9 of agents (\(kills)) in \(seconds) s;"
                + " outcomes \(ends); one owner and one vmm after every iteration; worst settle "
                + String(
                    format: "%.2f s; a stray process (never running the guest) gone within %.2f s", worstSettle,
                    worstStray))
        _ = try agents[owner].client().send(
            "POST", "/v1/guests/c1/stop", body: Array(#"{"force":true,"timeout_seconds":5}"#.utf8))
    }
}
