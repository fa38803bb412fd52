import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Load balancing on a real `ferry control` and three agents, each in a network namespace of its
/// own: the hot host's guests are made busy (their pace unbounded: each wants its whole vCPU), a
/// pass moves guests off it until it is under the threshold, and passes over the same load choose
/// nothing more; the hourly cap survives a controller killed with -9; an agent killed during a
/// balancing move leaves its guest on one host and the guest is not tried again within its
/// cool-down; the periodic pass balances without being asked.
///
/// Hosts offer 3 vCPUs; the `tiny` guests have 1. Settings: threshold 0.5, target 0.45, margin
/// 0.05 (a destination stays below 0.40: one busy guest each), a 3 s telemetry window.
@Suite(
    .serialized, .tags(.namespaces), .skippable(.namespaces),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
struct ControlPlaneBalanceTests {
    static let window = 3.0

    static func cloud(_ name: String, controllerExtra: [String] = [], agentExtra: [String] = []) throws
        -> ControlPlaneFixture
    {
        try ControlPlaneFixture(
            name, agents: 3, offerVCPUs: 3, namespaced: true,
            controllerExtra: [
                "--policy", "pack", "--balance-threshold", "0.5", "--balance-target", "0.45", "--balance-margin",
                "0.05", "--balance-window", "\(Int(window))s",
            ] + controllerExtra,
            agentOptions: [
                1: ["--migration-listen", "10.93.0.2:0"] + agentExtra,
                2: ["--migration-listen", "10.93.0.3:0"] + agentExtra,
                3: ["--migration-listen", "10.93.0.4:0"] + agentExtra,
            ])
    }

    /// Three guests on h1 (pack fills it: 3 vCPUs), made busy; returns their IDs once the
    /// controller's telemetry shows each of them busy over a whole window.
    static func hotHost(_ cloud: ControlPlaneFixture) throws -> [String] {
        let ids = try ControlPlaneDrainTests.runningGuests(cloud, 3)
        for id in ids {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            try #require(guest["host"] as? String == "h1", "pack put every guest on h1: \(guest)")
        }
        try busy(cloud, ids)
        return ids
    }

    /// Sets each guest's pace unbounded where it runs now, then waits until its telemetry shows it
    /// busy (published load ≥ 900‰) for a whole window after that.
    static func busy(_ cloud: ControlPlaneFixture, _ ids: [String]) throws {
        let paced = Date()
        for id in ids {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            try #require(try ControlPlaneGroupTests.pace(cloud, guest, "400GB/s") == 200, "\(guest)")
        }
        let deadline = Date().addingTimeInterval(60)
        var waiting = Set(ids)
        while !waiting.isEmpty, Date() < deadline {
            for id in waiting {
                let points = try cloud.json("GET", "/v1/guests/\(id)/usage?minutes=1").1["points"] as? [[String: Any]]
                let busySince = (points ?? []).filter { ($0["load_permille"] as? Int ?? 0) >= 900 }.compactMap {
                    ($0["time"] as? String).flatMap(RFC3339Parse.date)
                }
                if busySince.contains(where: { $0 > paced.addingTimeInterval(window + 1.5) }) { waiting.remove(id) }
            }
            usleep(200_000)
        }
        try #require(waiting.isEmpty, "no busy telemetry from \(waiting) within 60 s")
    }

    /// Runs a pass (POST /v1/balance) and follows it to its end: the pass.
    static func pass(_ cloud: ControlPlaneFixture, timeout: Double = 120) throws -> [String: Any] {
        let (status, started) = try cloud.json("POST", "/v1/balance")
        try #require(status == 202, "\(started)")
        return try follow(cloud, try #require(started["number"] as? Int), timeout: timeout)
    }

    static func follow(_ cloud: ControlPlaneFixture, _ number: Int, timeout: Double = 120) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try passes(cloud).first { $0["number"] as? Int == number } ?? [:]
            if let phase = last["phase"] as? String, phase != "running" { return last }
            usleep(100_000)
        }
        Issue.record("pass \(number) did not end within \(timeout) s: \(last)")
        return last
    }

    static func passes(_ cloud: ControlPlaneFixture) throws -> [[String: Any]] {
        let (status, report) = try cloud.json("GET", "/v1/balance")
        try #require(status == 200, "\(report)")
        return report["passes"] as? [[String: Any]] ?? []
    }

    static func moves(_ pass: [String: Any]) -> [[String: Any]] { pass["moves"] as? [[String: Any]] ?? [] }

    static func load(_ pass: [String: Any], _ host: String) -> Double {
        (pass["hosts"] as? [[String: Any]] ?? []).first { $0["id"] as? String == host }?["load"] as? Double ?? -1
    }

    /// The causes of the guest's balancing moves, from its journal.
    static func balanceMoves(_ cloud: ControlPlaneFixture, _ id: String) throws -> [String] {
        try ControlPlaneKVMTests.journal(cloud, id).compactMap { $0["cause"] as? String }.filter {
            $0.hasPrefix("moving to ") && $0.contains("(balance: ")
        }
    }

    static func describe(_ pass: [String: Any]) -> String {
        let moves = moves(pass).map {
            "\($0["guest"] ?? "?") \($0["from"] ?? "?")→\($0["to"] ?? "?") \($0["state"] ?? "?")"
        }
        return
            "pass \(pass["number"] ?? "?"): spread \(pass["spread_before"] ?? "?") → \(pass["spread_predicted"] ?? "?")"
            + " (measured \(pass["spread_measured_after"] ?? "-")), \(pass["seconds"] ?? "?") s, moves \(moves),"
            + " idle \(pass["idle"] ?? "-")"
    }

    /// (a) A pass moves guests off the hot host until, by its plan, it is under the threshold, each
    /// move journaled with its cause. A busy guest's migration may not converge on a loaded
    /// machine (its pages dirtied faster than the downtime target allows): that move fails with
    /// the migration's reason and the guest waits out its cool-down (5 s here) while later passes
    /// move others or it again. (b) Once h1 is under the threshold, ten passes more over the same
    /// load choose nothing (the hysteresis, not the cool-down) and no guest goes back to h1 or
    /// moves twice.
    @Test func aPassCoolsTheHotHostAndTenMoreOverTheSameLoadChooseNothing() throws {
        // A short cool-down: a move that failed is tried again soon; the hysteresis alone keeps
        // the ten passes from moving anything.
        let cloud = try Self.cloud("cpb1", controllerExtra: ["--balance-cool-down", "5s"])
        let ids = try Self.hotHost(cloud)
        let first = try Self.pass(cloud)
        print("balancing, hot h1: \(Self.describe(first))")
        #expect(first["phase"] as? String == "done", "\(first)")
        #expect(Self.load(first, "h1") > 0.9, "h1 busy: \(first)")
        let moves = Self.moves(first)
        #expect(moves.count == 2, "1.0 → 0.67 → 0.33: \(first)")
        #expect(Set(moves.compactMap { $0["to"] as? String }) == ["h2", "h3"], "one busy guest each: \(moves)")
        let predicted = moves.last?["from_load_after"] as? Double ?? 1
        #expect(predicted < 0.5, "the pass stops once h1 is under the threshold: \(moves)")
        #expect((first["spread_predicted"] as? Double ?? 1) < (first["spread_before"] as? Double ?? 0))
        var passes = [first]
        var movedIDs: [String] = []
        var failedIDs: Set<String> = []
        var tried = 0
        while true {
            let last = passes[passes.count - 1]
            for move in Self.moves(last) {
                let guest = move["guest"] as? String ?? ""
                #expect(!movedIDs.contains(guest), "a guest moved twice: \(last)")
                tried += 1
                let causes = try Self.balanceMoves(cloud, guest)
                #expect(
                    !causes.isEmpty
                        && causes.allSatisfy { $0.contains("(balance: host h1 at ") && $0.hasSuffix(" > 0.50)") },
                    "\(causes)")
                if move["state"] as? String == "moved" {
                    movedIDs.append(guest)
                } else {
                    #expect(move["state"] as? String == "failed", "\(move)")
                    #expect(
                        (move["reason"] as? String ?? "").contains("converg"), "only a migration's own failure: \(move)"
                    )
                    failedIDs.insert(guest)
                }
            }
            guard movedIDs.count < 2, passes.count < 10 else { break }
            try Self.busy(cloud, movedIDs)
            passes.append(try Self.pass(cloud))
            print("balancing, again: \(Self.describe(passes[passes.count - 1]))")
        }
        #expect(movedIDs.count == 2, "h1 cooled: \(passes.map(Self.describe))")
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")

        // The same load: the moved guests kept busy where they are now.
        try Self.busy(cloud, movedIDs)
        var quiet: [[String: Any]] = []
        for _ in 0..<10 { quiet.append(try Self.pass(cloud)) }
        print("balancing, ten passes more: \(quiet.map(Self.describe).joined(separator: "; "))")
        for pass in quiet {
            #expect(Self.moves(pass).isEmpty && pass["idle"] as? String == "below_threshold", "\(pass)")
            #expect(Self.load(pass, "h1") < 0.5 && Self.load(pass, "h1") > 0.2, "\(pass)")
        }
        let lastMoving = try #require(passes.last { !Self.moves($0).isEmpty })
        let measured = try Self.passes(cloud).first { $0["number"] as? Int == lastMoving["number"] as? Int }
        let after = measured?["spread_measured_after"] as? Double
        #expect(after != nil && after! < 0.15, "the spread the moves left, measured: \(measured ?? [:])")
        for id in ids {
            let begun = try Self.balanceMoves(cloud, id).count
            #expect(begun <= 1 || failedIDs.contains(id), "only a failed move is tried again, after its cool-down")
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            #expect(guest["state"] as? String == "running" && guest["moving_to"] == nil, "\(guest)")
            if movedIDs.contains(id) { #expect(guest["host"] as? String != "h1", "no guest returns: \(guest)") }
        }
        let report = try cloud.json("GET", "/v1/balance").1
        let settings = report["settings"] as? [String: Any] ?? [:]
        #expect(report["moves_last_hour"] as? Int == tried && settings["max_moves_per_hour"] as? Int == 12)

        // Through `ferry cloud balance` as a site admin: the report, and a pass run and followed.
        let run = try ControlPlaneMoveTests.siteAdminCLI(cloud)
        let shown = try run(["balance"])
        #expect(shown.status == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains("balancing off: threshold 0.50, target 0.45, margin 0.05"), "\(shown.stdout)")
        #expect(shown.stdout.contains("moves in the last hour \(tried) of 12"), "\(shown.stdout)")
        #expect(shown.stdout.contains("pass 1 done: 2 moves chosen, "), "\(shown.stdout)")
        let ran = try run(["balance", "--run", "--wait"])
        #expect(ran.status == 0, "\(ran.stdout) \(ran.stderr)")
        #expect(ran.stdout.contains("done: nothing chosen: no host is above the threshold"), "\(ran.stdout)")
    }

    /// (c) The hourly cap holds across a controller killed with -9: with a cap of 1, the first
    /// pass moves one guest (or tries: a begun move counts) and h1 stays hot; the next controller's pass chooses nothing, `cap
    /// reached`, counting the move from the journal.
    @Test func theHourlyCapHoldsAcrossAControllerKilledWithMinus9() throws {
        let cloud = try Self.cloud("cpb2", controllerExtra: ["--balance-max-moves-per-hour", "1"])
        _ = try Self.hotHost(cloud)
        let first = try Self.pass(cloud)
        print("balancing, cap 1: \(Self.describe(first))")
        // Begun, it counts whether it moved or its migration did not converge.
        let only = try #require(Self.moves(first).first)
        #expect(Self.moves(first).count == 1, "\(first)")
        #expect(
            only["state"] as? String == "moved"
                || (only["state"] as? String == "failed" && (only["reason"] as? String ?? "").contains("converg")),
            "\(only)")
        #expect(first["moves_allowed"] as? Int == 1)

        cloud.killController()
        try cloud.startController()
        try cloud.waitForHosts(3)
        let report = try cloud.json("GET", "/v1/balance").1
        #expect(report["moves_last_hour"] as? Int == 1 && (report["passes"] as? [Any])?.isEmpty == true, "\(report)")
        let again = try Self.pass(cloud)
        print("balancing, after a restart: \(Self.describe(again))")
        #expect(Self.load(again, "h1") > 0.5, "h1 is still hot: \(again)")
        #expect(Self.moves(again).isEmpty && again["idle"] as? String == "cap_reached", "\(again)")
        #expect(again["moves_in_last_hour"] as? Int == 1 && again["moves_allowed"] as? Int == 0, "\(again)")
        #expect((again["reason"] as? String)?.contains("hourly cap") == true, "\(again)")
    }

    /// (d) The source's agent is killed with -9 while a balancing move runs: the pass reports what
    /// it could not do (the move under way failed, or, when the guest's vmm finished it without its
    /// agent, the next move off the silent host not begun); every guest ends running on exactly
    /// one host once the agent is back, which is after the move timeout (the controller keeps
    /// asking the agents where the guest is past it); the next pass does not try the guest again
    /// (its cool-down).
    @Test func anAgentKilledDuringABalancingMoveLeavesTheGuestOnOneHost() throws {
        let cloud = try Self.cloud(
            "cpb3", controllerExtra: ["--move-timeout", "5"], agentExtra: ["--incoming-reservation", "5"])
        let ids = try Self.hotHost(cloud)
        let (status, started) = try cloud.json("POST", "/v1/balance")
        try #require(status == 202, "\(started)")
        let number = try #require(started["number"] as? Int)
        var moving: String?
        let deadline = Date().addingTimeInterval(60)
        while moving == nil, Date() < deadline {
            let pass = try Self.passes(cloud).first { $0["number"] as? Int == number } ?? [:]
            moving = Self.moves(pass).first { $0["state"] as? String == "moving" }?["guest"] as? String
            if pass["phase"] as? String != "running" { break }
            usleep(10_000)
        }
        let victim = try #require(moving, "no move was seen under way")
        _ = cloud.agents[0].kill9()
        let ended = try Self.follow(cloud, number)
        print("balancing, agent killed: \(Self.describe(ended))")
        let moves = Self.moves(ended)
        let victimMove = moves.first { $0["guest"] as? String == victim } ?? [:]
        // Its vmm may finish the migration without its agent (then the move settles from the
        // destination's inventory) or not (then it is failed, the guest where the agents say).
        #expect(["moved", "failed"].contains(victimMove["state"] as? String ?? ""), "\(ended)")
        let unfinished = moves.filter { ["failed", "skipped"].contains($0["state"] as? String ?? "") }
        #expect(!unfinished.isEmpty, "the pass reports what it could not do: \(ended)")
        #expect(unfinished.allSatisfy { !($0["reason"] as? String ?? "").isEmpty }, "\(unfinished)")
        #expect(
            moves.filter { $0["state"] as? String == "skipped" }.allSatisfy {
                ($0["reason"] as? String ?? "").contains("host h1 no longer takes guests")
            }, "\(moves)")

        // Away past --move-timeout: a move the agents did not settle is still asked about.
        Thread.sleep(forTimeInterval: 6)
        try cloud.agents[0].start(
            extra: [
                "--controller", cloud.url, "--host-id", "h1", "--offer-vcpus", "3", "--offer-memory-mib", "1024",
                "--offer-disk-gib", "1", "--migration-listen", "10.93.0.2:0", "--incoming-reservation", "5",
            ], prefix: cloud.namespacePrefix(1))
        let back = Date().addingTimeInterval(60)
        var guest: [String: Any] = [:]
        while Date() < back {
            guest = try cloud.json("GET", "/v1/guests/\(victim)").1
            if guest["state"] as? String == "running", guest["moving_to"] == nil { break }
            usleep(200_000)
        }
        #expect(guest["state"] as? String == "running" && guest["moving_to"] == nil, "\(guest)")
        let expired = Date().addingTimeInterval(30)
        while Date() < expired, try cloud.guestsOnHosts().count != ids.count { usleep(200_000) }
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")

        try cloud.waitForHosts(3)
        let onH1 = try ids.filter { try cloud.json("GET", "/v1/guests/\($0)").1["host"] as? String == "h1" }
        try Self.busy(cloud, onH1)
        let next = try Self.pass(cloud)
        print("balancing, after the agent came back: \(Self.describe(next))")
        // The guests whose moves were begun (the journal has them) are in their cool-down.
        let tried = Set(moves.filter { $0["state"] as? String != "skipped" }.compactMap { $0["guest"] as? String })
        #expect(tried.contains(victim))
        #expect(Self.moves(next).allSatisfy { !tried.contains($0["guest"] as? String ?? "") }, "\(next)")
        if Self.moves(next).isEmpty {
            #expect(["cool_down", "below_threshold"].contains(next["idle"] as? String ?? ""), "\(next)")
        }
    }

    /// (e) With `--balance-interval 2s` the balancing happens without being asked: the report
    /// gives the next pass's time, and a periodic pass moves a guest off h1, journaled with the
    /// balancing's cause.
    @Test func thePeriodicPassBalancesWithoutBeingAsked() throws {
        let cloud = try Self.cloud("cpb4", controllerExtra: ["--balance-interval", "2s", "--balance-cool-down", "5s"])
        let report = try cloud.json("GET", "/v1/balance").1
        #expect((report["settings"] as? [String: Any])?["interval_s"] as? Double == 2, "\(report)")
        #expect(report["next_pass_at"] as? String != nil || report["running"] as? Bool == true, "\(report)")
        // Made busy without waiting for their telemetry: the periodic passes see it come.
        let ids = try ControlPlaneDrainTests.runningGuests(cloud, 3)
        for id in ids {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            try #require(guest["host"] as? String == "h1", "\(guest)")
            try #require(try ControlPlaneGroupTests.pace(cloud, guest, "400GB/s") == 200, "\(guest)")
        }
        let deadline = Date().addingTimeInterval(90)
        var moved: [String] = []
        while Date() < deadline {
            moved = try ids.filter { id in
                try Self.balanceMoves(cloud, id).count == 1
                    && cloud.json("GET", "/v1/guests/\(id)").1["host"] as? String != "h1"
            }
            if !moved.isEmpty { break }
            usleep(250_000)
        }
        let passes = try Self.passes(cloud)
        print("balancing, periodic: \(passes.reversed().map(Self.describe).joined(separator: "; "))")
        #expect(!moved.isEmpty, "a guest moved off h1 by a periodic pass: \(passes.map(Self.describe))")
        #expect(passes.allSatisfy { $0["trigger"] as? String == "periodic" }, "\(passes.map { $0["trigger"] ?? "?" })")
        #expect(passes.contains { !Self.moves($0).isEmpty }, "\(passes)")
    }
}
