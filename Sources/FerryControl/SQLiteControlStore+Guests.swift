import FerryHostModel
import Foundation
import GRDB

extension SQLiteControlStore {
    public func createGuest(_ request: GuestRequest, clientToken: String?, cause: String, scalingGroup: String?)
        async throws(ControlError) -> GuestCreation
    {
        try ControlRules.validate(clientToken: clientToken)
        let creation = try await writing("create guest \(request.name) of project \(request.project) in") { db in
            if let clientToken, let earlier = try self.guest(db, project: request.project, clientToken: clientToken) {
                return try ControlRules.repeatCreation(request, clientToken: clientToken, earlier: earlier)
            }
            if let scalingGroup { try self.checkRoomInGroup(db, scalingGroup, request) }
            let guest = try self.placeNew(db, request, clientToken: clientToken)
            try ControlRows.insert(guest, db)
            if let scalingGroup { try self.join(db, guest.id, scalingGroup) }
            try ControlRows.appendJournal(db, id: guest.id, from: nil, to: .pending, cause: cause, at: guest.createdAt)
            return GuestCreation(guest: guest, created: true)
        }
        if creation.created {
            logger.info(
                "guest placed",
                metadata: [
                    "guest.id": "\(creation.guest.id)", "guest.project": "\(request.project)",
                    "guest.host": "\(creation.guest.host)",
                ])
        }
        return creation
    }

    public func guest(id: GuestID) async throws(ControlError) -> CloudGuest? {
        try await reading("read guest \(id) from") { db in try self.fetchGuest(db, id) }
    }

    public func guests(project: String) async throws(ControlError) -> [CloudGuest] {
        try await reading("list the guests of project \(project) in") { db in
            try Row.fetchAll(
                db, sql: "SELECT \(ControlRows.guestColumns) FROM guests WHERE project = ? ORDER BY created_ms, id",
                arguments: [project]
            ).map { row in try ControlRows.guest(row, file: self.path) }
        }
    }

    public func guests(host: String, states: Set<CloudGuestState>) async throws(ControlError) -> [CloudGuest] {
        let list = ControlRows.sqlList(states)
        return try await reading("list the guests of host \(host) in") { db in
            try Row.fetchAll(
                db,
                sql: "SELECT \(ControlRows.guestColumns) FROM guests WHERE host = ? AND state IN \(list)"
                    + " ORDER BY created_ms, id", arguments: [host]
            ).map { row in try ControlRows.guest(row, file: self.path) }
        }
    }

    public func guests(states: Set<CloudGuestState>) async throws(ControlError) -> [CloudGuest] {
        let list = ControlRows.sqlList(states)
        return try await reading("list the guests in states \(list) in") { db in
            try Row.fetchAll(
                db,
                sql: "SELECT \(ControlRows.guestColumns) FROM guests WHERE state IN \(list) ORDER BY created_ms, id"
            ).map { row in try ControlRows.guest(row, file: self.path) }
        }
    }

    public func transition(
        _ id: GuestID, from expected: CloudGuestState, to next: CloudGuestState, cause: String, errorReason: String?,
        generation: Int64?
    ) async throws(ControlError) -> CloudGuest {
        try ControlRules.validate(transitionOf: id, to: next, errorReason: errorReason)
        let now = now()
        let guest = try await writing("change the state of guest \(id) in") { db in
            guard let guest = try self.fetchGuest(db, id) else {
                throw ControlError(.notFound, "no guest \(id) in control store \(self.path)")
            }
            try ControlRules.checkTransition(guest, from: expected, to: next, generation: generation)
            try db.execute(
                sql: """
                    UPDATE guests SET state = ?, error_reason = COALESCE(?, error_reason), generation = ?,
                    state_since_ms = ? WHERE id = ? AND generation = ?
                    """,
                arguments: [
                    next.rawValue, errorReason, guest.generation + 1, ControlRows.milliseconds(now), id.hex,
                    guest.generation,
                ])
            try ControlRows.appendJournal(db, id: id, from: expected, to: next, cause: cause, at: now)
            return ControlRules.transitioned(guest, to: next, errorReason: errorReason, at: now)
        }
        logger.guestStateChanged(id, from: expected, to: next, cause: cause)
        return guest
    }

    public func journal(of id: GuestID) async throws(ControlError) -> [CloudJournalEntry] {
        try await reading("read the journal of guest \(id) in") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM journal WHERE guest_id = ? ORDER BY sequence", arguments: [id.hex])
                .map { row in try ControlRows.journalEntry(row, file: self.path) }
        }
    }

    public func journal(latest limit: Int) async throws(ControlError) -> [CloudJournalEntry] {
        try await reading("read the journal in") { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM journal ORDER BY sequence DESC LIMIT ?", arguments: [max(0, limit)]
            )
            .reversed().map { row in try ControlRows.journalEntry(row, file: self.path) }
        }
    }

    // MARK: - Inside a transaction

    /// The new guest, placed: the project, flavor and image exist, the quota has room, and the
    /// scheduler found a host; nothing written yet but, for a host in standby, its power (waking).
    func placeNew(_ db: Database, _ request: GuestRequest, clientToken: String?) throws -> CloudGuest {
        guard
            let projectRow = try Row.fetchOne(
                db, sql: "SELECT * FROM projects WHERE name = ?", arguments: [request.project])
        else { throw ControlError(.notFound, "no project \(request.project): create it first") }
        guard
            let flavorRow = try Row.fetchOne(
                db, sql: "SELECT * FROM flavors WHERE name = ?", arguments: [request.flavor])
        else { throw ControlError(.notFound, "no flavor \(request.flavor): list the flavors and pick one") }
        guard
            let imageRow = try Row.fetchOne(db, sql: "SELECT * FROM images WHERE name = ?", arguments: [request.image])
        else { throw ControlError(.notFound, "no image \(request.image): list the images and pick one") }
        let flavor = ControlRows.flavor(flavorRow)
        let image = try ControlRows.image(imageRow, file: path)
        let hosts = try allHosts(db)
        try ControlRules.checkRunnable(flavor, image, hosts: hosts)
        try checkQuota(ControlRows.project(projectRow), usage(db, project: request.project), flavor)
        let host = try chooseHost(db, request, flavor, image, hosts: hosts)
        let now = now()
        if ControlRules.mustWake(host, among: hosts) {
            try db.execute(
                sql: "UPDATE hosts SET power = 'waking', power_since_ms = ? WHERE id = ?",
                arguments: [ControlRows.milliseconds(now), host])
        }
        return CloudGuest(
            id: .random(), request: request, resources: flavor.resources,
            pricePerSecondMicros: flavor.pricePerSecondMicros, imageKind: image.kind,
            diskTemplatePath: image.diskTemplatePath, host: host, state: .pending, errorReason: nil,
            clientToken: clientToken, generation: 1, createdAt: now, stateSince: now)
    }

    /// A host in the lease's pool for a guest of the lessee; otherwise the scheduler's choice
    /// beside the slots of delivered leases, if the leases admitted keep their room.
    func chooseHost(_ db: Database, _ request: GuestRequest, _ flavor: Flavor, _ image: Image, hosts: [HostRecord])
        throws -> String
    {
        let now = now()
        if let leaseID = request.lease {
            return try ControlRules.choosePoolHost(
                request, lease: try fetchLeases(db, "id = ?", [leaseID]).first,
                guests: try holdingGuests(db, "lease_id = ?", [leaseID]),
                hosts: hosts.filter { $0.kvm || image.kind != .kvm }, now: now, heartbeatTimeout: heartbeatTimeout)
        }
        var usage = try usageByHost(db)
        let leases = try fetchLeases(
            db, "state = 'admitted' AND phase != 'ended' AND (end_ms > ? OR at_end = 'suspend')",
            [Billing.milliseconds(now)])
        if !leases.isEmpty {
            let reserve = ControlRules.poolReserve(
                leases: leases, guests: try holdingGuests(db, "lease_id IS NOT NULL", []))
            usage.merge(reserve, uniquingKeysWith: +)
            try ControlRules.checkLeasesKeepRoom(
                for: flavor, leases: leases, onDemand: try onDemandUsage(db), hosts: hosts, now: now,
                heartbeatTimeout: heartbeatTimeout)
        }
        return try ControlRules.chooseHost(
            PlacementRequest(flavor.resources, needsKVM: image.kind == .kvm), hosts: hosts, usage: usage,
            policy: policy, now: now, heartbeatTimeout: heartbeatTimeout)
    }

    func checkQuota(_ project: Project, _ usage: ProjectUsage, _ flavor: Flavor) throws {
        try ControlRules.checkQuota(project, usage, flavor)
    }

    func fetchGuest(_ db: Database, _ id: GuestID) throws -> CloudGuest? {
        try Row.fetchOne(db, sql: "SELECT \(ControlRows.guestColumns) FROM guests WHERE id = ?", arguments: [id.hex])
            .map { row in try ControlRows.guest(row, file: path) }
    }

    func guest(_ db: Database, project: String, clientToken: String) throws -> CloudGuest? {
        try Row.fetchOne(
            db, sql: "SELECT \(ControlRows.guestColumns) FROM guests WHERE project = ? AND client_token = ?",
            arguments: [project, clientToken]
        ).map { row in try ControlRows.guest(row, file: path) }
    }
}
