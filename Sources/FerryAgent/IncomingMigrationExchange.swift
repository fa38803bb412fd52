import FerryHostModel
import Foundation

/// The source agent's request to the destination agent, `POST /v1/migrations/incoming`
/// (docs/agent.md, "Agent to agent"): reserve the guest as `migrating-in` and start a
/// `ferry vmm --incoming` for it.
public struct IncomingMigrationRequest: Codable, Sendable, Equatable {
    /// The source's migration ID; the destination keys its reservation by it, so a retried
    /// request (a lost answer) finds the same reservation instead of making a second one.
    public var migrationID: String
    /// The guest's ID, kept across the move (the vmm's socket and image are named by it).
    public var guestID: GuestID
    /// The guest's specification as the source's inventory holds it (name, kind, vCPUs, memory,
    /// disks…): the destination checks capacity and the name against it.
    public var specification: GuestSpecification
    /// The guest is paused on the source: the destination's vmm starts `--paused`.
    public var paused: Bool
    /// The source agent, http://HOST:PORT (for the destination's records and logs).
    public var sourceAgent: String
    /// Set for a cold migration (docs/cold-migration.md): no vmm is started, the files move.
    public var cold: ColdMigrationOffer?

    enum CodingKeys: String, CodingKey {
        case migrationID = "migration_id"
        case guestID = "guest_id"
        case specification, paused, cold
        case sourceAgent = "source_agent"
    }

    public init(
        migrationID: String, guestID: GuestID, specification: GuestSpecification, paused: Bool, sourceAgent: String,
        cold: ColdMigrationOffer? = nil
    ) {
        self.cold = cold
        self.migrationID = migrationID
        self.guestID = guestID
        self.specification = specification
        self.paused = paused
        self.sourceAgent = sourceAgent
    }
}

/// The destination's answer (201): where the source's vmm migrates to.
public struct IncomingMigrationReservation: Codable, Sendable, Equatable {
    public var migrationID: String
    public var guestID: GuestID
    /// HOST:PORT of the destination's `ferry vmm --incoming` (on its `--migration-listen` host).
    public var address: String
    /// If no source has connected by then, the destination abandons the reservation (kills its
    /// vmm, removes the guest from its inventory); the source must not start migrating later.
    public var expiresAt: Date
    /// A cold migration's files: where the destination keeps each, and which it sees already.
    public var placements: [ColdFilePlacement]?

    enum CodingKeys: String, CodingKey {
        case migrationID = "migration_id"
        case guestID = "guest_id"
        case address, placements
        case expiresAt = "expires_at"
    }

    public init(
        migrationID: String, guestID: GuestID, address: String, expiresAt: Date, placements: [ColdFilePlacement]? = nil
    ) {
        self.placements = placements
        self.migrationID = migrationID
        self.guestID = guestID
        self.address = address
        self.expiresAt = expiresAt
    }
}

/// `GET /v1/migrations/incoming/{id}`: the destination's view of an incoming migration. This is
/// the answer that resolves a source's `unresolved` handoff.
public struct IncomingMigrationStatus: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Reserved, the vmm listens, no source has sent anything yet.
        case waiting
        /// A source is sending; the guest is not here yet.
        case receiving
        /// The guest runs (or is paused) here, or a cold migration registered it here: the
        /// destination owns it.
        case arrived
        /// The vmm exited before the guest ran here (exit status 1: the engine discarded it).
        case failed
        /// Abandoned before any byte arrived (the source's DELETE, or the reservation expired).
        case abandoned
    }

    public var migrationID: String
    public var guestID: GuestID
    public var state: State
    /// The incoming vmm's exit status once it ended (`failed`, `abandoned`).
    public var exitStatus: Int32?
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case migrationID = "migration_id"
        case guestID = "guest_id"
        case state
        case exitStatus = "exit_status"
        case error
    }

    public init(migrationID: String, guestID: GuestID, state: State, exitStatus: Int32? = nil, error: String? = nil) {
        self.migrationID = migrationID
        self.guestID = guestID
        self.state = state
        self.exitStatus = exitStatus
        self.error = error
    }

    /// The state of an `IncomingGuestProcess` as this answer gives it.
    public static func state(of process: IncomingGuestProcess, receiving: Bool) -> State {
        switch process.current {
        case .running: .arrived
        case .failed: .failed
        case nil: receiving ? .receiving : .waiting
        }
    }

    /// What the source's vmm is told (`resolve`'s `guest_location`) for an `unresolved` handoff:
    /// `destination` when the guest arrived there, `source` when the destination no longer can
    /// have it (failed or abandoned), nil while it cannot say yet (waiting, receiving): ask again.
    public var resolution: String? {
        switch state {
        case .arrived: "destination"
        case .failed, .abandoned: "source"
        case .waiting, .receiving: nil
        }
    }
}

extension AgentClient {
    /// `POST /v1/migrations/incoming` to the destination agent. Blocks: use `OffPool` in async code.
    /// A `busy` answer (the guest's name or the migration ID is held by an operation that is
    /// ending there, such as a failed arrival's teardown) is asked again every 100 ms for up to
    /// `busyFor`; the request is idempotent by its migration ID.
    public func prepareIncoming(_ request: IncomingMigrationRequest, busyFor: Duration = .zero)
        throws(AgentClientError) -> IncomingMigrationReservation
    {
        let until = ContinuousClock.now + busyFor
        while true {
            do {
                return try exchange(
                    "POST", "/v1/migrations/incoming", body: request, as: IncomingMigrationReservation.self)
            } catch  where error.apiError?.code == AgentAPIError.Code.busy.rawValue && ContinuousClock.now < until {
                usleep(100_000)
            }
        }
    }

    /// `GET /v1/migrations/incoming/{id}`: where the destination says the guest is.
    public func incomingStatus(migrationID: String) throws(AgentClientError) -> IncomingMigrationStatus {
        let target = "/v1/migrations/incoming/\(migrationID)"
        return try Self.decodeExchange(IncomingMigrationStatus.self, try checked(send("GET", target)), target: target)
    }

    /// `DELETE /v1/migrations/incoming/{id}`: the source gives up before migrating (409 once
    /// bytes arrived: then only the migration's own end decides).
    public func abandonIncoming(migrationID: String) throws(AgentClientError) {
        _ = try checked(send("DELETE", "/v1/migrations/incoming/\(migrationID)"))
    }

    private func exchange<Body: Encodable, Value: Decodable>(
        _ method: String, _ target: String, body: Body, as type: Value.Type
    ) throws(AgentClientError) -> Value {
        let bytes: [UInt8]
        do { bytes = Array(try Self.exchangeEncoder.encode(body)) } catch {
            throw AgentClientError(.protocolViolation, "cannot encode the request to \(target): \(error)")
        }
        return try Self.decodeExchange(Value.self, try checked(send(method, target, body: bytes)), target: target)
    }

    public static var exchangeEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    static func decodeExchange<Value: Decodable>(_ type: Value.Type, _ response: AgentResponse, target: String)
        throws(AgentClientError) -> Value
    {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do { return try decoder.decode(Value.self, from: Data(response.body)) } catch {
            throw AgentClientError(
                .protocolViolation, "the agent's answer to \(target) is not the JSON expected: \(error)",
                status: response.status)
        }
    }
}
