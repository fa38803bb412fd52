import FerryAgent
import FerryControl
import FerryHostModel
import Foundation
import Logging

/// Settling a move whose outcome nobody reported (a controller killed during it, a source agent
/// that stopped answering): the agents' inventories say where the guest is. The destination's
/// agent holding it settled (running or paused; after a cold move stopped or suspended too: the
/// registration is a cold move's switch) means it arrived: the move is finished. Else the
/// source's agent holding it settled (not `migrating-out`) means the migration ended without it:
/// the move is abandoned. Anything else (both still migrating, an agent silent)
/// leaves the move recorded, to be asked again.
extension GuestMover {
    /// What one agent says of the guest.
    enum Holding: Equatable {
        /// Its row, in this state (`running`, `migrating-out`, …).
        case state(String)
        /// The agent has no such guest.
        case absent
        /// The agent did not answer.
        case silent(String)

        /// This agent alone owns the guest: its row is settled (running, paused, or, after a cold
        /// move or a failed one, stopped, suspended or crashed), not `migrating-in`/`-out`.
        var runs: Bool {
            guard case .state(let state) = self else { return false }
            return ["running", "paused", "stopped", "suspended", "crashed"].contains(state)
        }
    }

    /// The move settled as the agents say (the guest as recorded then), or nil when they do not
    /// say yet.
    func settle(_ moving: CloudGuest) async -> CloudGuest? {
        guard let destination = moving.movingTo else { return moving }
        let there = await holding(destination, moving.id)
        let here: Holding = there.runs ? .absent : await holding(moving.host, moving.id)
        do {
            if there.runs {
                return try await store.finishMove(
                    moving.id, cause: "controller: host \(destination) holds it \(Self.text(there))")
            }
            if here.runs {
                return try await store.abandonMove(
                    moving.id,
                    cause: "controller: host \(moving.host) holds it \(Self.text(here)), host \(destination)"
                        + " \(Self.text(there))")
            }
        } catch {
            logger.notice("a move was settled meanwhile: \(error)", metadata: ["guest.id": "\(moving.id)"])
            if error.code == .notFound { return moving }
            return try? await store.guest(id: moving.id)
        }
        logger.notice(
            "the agents do not say yet where a moving guest is",
            metadata: [
                "guest.id": "\(moving.id)", "guest.host": "\(moving.host)", "guest.moving_to": "\(destination)",
                "guest.source_says": "\(Self.text(here))", "guest.destination_says": "\(Self.text(there))",
            ])
        return nil
    }

    /// After a restart: settles every move the store has begun, each asked again until it is
    /// settled (`settleEventually`).
    func resume() async throws(ControlError) {
        let moving = try await store.guests(states: Set(CloudGuestState.allCases)).filter { $0.movingTo != nil }
        for guest in moving {
            logger.notice(
                "settling a move begun before a restart",
                metadata: [
                    "guest.id": "\(guest.id)", "guest.host": "\(guest.host)",
                    "guest.moving_to": "\(guest.movingTo ?? "?")",
                ])
            Task { await self.settleEventually(guest) }
        }
    }

    /// `settle`, every second until the move's timeout has passed, then every `lateInterval` (or
    /// every move timeout, when that is shorter), until it settles (or the task is cancelled): a
    /// guest is never left recorded moving while this controller runs. The first late ask is
    /// logged as an error: an agent stays silent.
    func settleEventually(_ guest: CloudGuest, lateInterval: Duration = .seconds(30)) async {
        let lateInterval = min(lateInterval, timeout)
        let deadline = ContinuousClock.now + timeout
        var late = false
        while !Task.isCancelled {
            if let settled = await settle(guest) {
                logger.notice(
                    "a move is settled",
                    metadata: ["guest.id": "\(guest.id)", "guest.host": "\(settled.host)"])
                return
            }
            if !late, ContinuousClock.now >= deadline {
                late = true
                logger.error(
                    """
                    a move is not settled within its timeout: the guest stays recorded moving (its capacity held \
                    on both hosts) and its agents are asked again every \(lateInterval)
                    """,
                    metadata: ["guest.id": "\(guest.id)", "guest.host": "\(guest.host)"])
            }
            try? await Task.sleep(for: late ? lateInterval : .seconds(1))
        }
    }

    /// What `host`'s agent says of the guest.
    func holding(_ host: String, _ id: GuestID) async -> Holding {
        let name = GuestProvisioner.hostName(id).value
        do {
            var client = try await agent(host)
            client.timeoutMs = 5_000
            let agent = client
            let response = try await work.run { try agent.send("GET", "/v1/guests/\(name)") }
            if response.status == 404 { return .absent }
            let view = try JSONDecoder().decode(HostGuestView.self, from: Data(agent.checked(response).body))
            return .state(view.state)
        } catch {
            return .silent("\(error)")
        }
    }

    static func text(_ holding: Holding) -> String {
        switch holding {
        case .state(let state): state
        case .absent: "has no such guest"
        case .silent(let why): "did not answer (\(why))"
        }
    }
}
