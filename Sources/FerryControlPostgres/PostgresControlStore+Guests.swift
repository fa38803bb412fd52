import FerryControl
import FerryHostModel
import Foundation
import PostgresNIO

extension PostgresControlStore {
    public func createGuest(_ request: GuestRequest, clientToken: String?, cause: String, scalingGroup: String?)
        async throws(ControlError) -> GuestCreation
    {
        try ControlRules.validate(clientToken: clientToken)
        let creation = try await writing("create guest \(request.name) of project \(request.project) in") {
            connection in
            if let clientToken,
                let earlier = try await self.guest(connection, project: request.project, clientToken: clientToken)
            {
                return try ControlRules.repeatCreation(request, clientToken: clientToken, earlier: earlier)
            }
            if let scalingGroup { try await self.checkRoomInGroup(connection, scalingGroup, request) }
            let guest = try await self.placeNew(connection, request, clientToken: clientToken)
            try await PostgresRows.insert(guest, connection, logger: logger)
            if let scalingGroup { try await self.join(connection, guest.id, scalingGroup) }
            try await PostgresRows.appendJournal(
                connection, id: guest.id, from: nil, to: .pending, cause: cause, at: guest.createdAt, logger: logger)
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
        try await reading("read guest \(id) from") { connection in try await self.fetchGuest(connection, id) }
    }

    public func guests(project: String) async throws(ControlError) -> [CloudGuest] {
        try await reading("list the guests of project \(project) in") { connection in
            try await PostgresRows.all(
                connection,
                """
                SELECT \(unescaped: PostgresRows.guestColumns) FROM guests WHERE project = \(project)
                ORDER BY created_ms, id
                """, logger: logger
            ) { row in try PostgresRows.guest(row, url: self.url) }
        }
    }

    public func guests(host: String, states: Set<CloudGuestState>) async throws(ControlError) -> [CloudGuest] {
        let names = states.map(\.rawValue).sorted()
        return try await reading("list the guests of host \(host) in") { connection in
            try await PostgresRows.all(
                connection,
                """
                SELECT \(unescaped: PostgresRows.guestColumns) FROM guests WHERE host = \(host)
                AND state = ANY(\(names)) ORDER BY created_ms, id
                """, logger: logger
            ) { row in try PostgresRows.guest(row, url: self.url) }
        }
    }

    public func guests(states: Set<CloudGuestState>) async throws(ControlError) -> [CloudGuest] {
        let names = states.map(\.rawValue).sorted()
        return try await reading("list the guests in states \(names.joined(separator: ", ")) in") { connection in
            try await PostgresRows.all(
                connection,
                """
                SELECT \(unescaped: PostgresRows.guestColumns) FROM guests WHERE state = ANY(\(names))
                ORDER BY created_ms, id
                """, logger: logger
            ) { row in try PostgresRows.guest(row, url: self.url) }
        }
    }

    public func transition(
        _ id: GuestID, from expected: CloudGuestState, to next: CloudGuestState, cause: String, errorReason: String?,
        generation: Int64?
    ) async throws(ControlError) -> CloudGuest {
        try ControlRules.validate(transitionOf: id, to: next, errorReason: errorReason)
        let now = now()
        let guest = try await writing("change the state of guest \(id) in") { connection in
            guard let guest = try await self.fetchGuest(connection, id) else {
                throw ControlError(.notFound, "no guest \(id) in control store \(self.url)")
            }
            try ControlRules.checkTransition(guest, from: expected, to: next, generation: generation)
            try await connection.query(
                """
                UPDATE guests SET state = \(next.rawValue), error_reason = COALESCE(\(errorReason), error_reason),
                generation = \(guest.generation + 1), state_since_ms = \(PostgresRows.milliseconds(now))
                WHERE id = \(id.hex) AND generation = \(guest.generation)
                """, logger: logger)
            try await PostgresRows.appendJournal(
                connection, id: id, from: expected, to: next, cause: cause, at: now, logger: logger)
            return ControlRules.transitioned(guest, to: next, errorReason: errorReason, at: now)
        }
        logger.guestStateChanged(id, from: expected, to: next, cause: cause)
        return guest
    }

    public func journal(of id: GuestID) async throws(ControlError) -> [CloudJournalEntry] {
        try await reading("read the journal of guest \(id) in") { connection in
            try await PostgresRows.all(
                connection, "SELECT * FROM journal WHERE guest_id = \(id.hex) ORDER BY sequence", logger: logger
            ) { row in try PostgresRows.journalEntry(row, url: self.url) }
        }
    }

    public func journal(latest limit: Int) async throws(ControlError) -> [CloudJournalEntry] {
        try await reading("read the journal in") { connection in
            try await PostgresRows.all(
                connection, "SELECT * FROM journal ORDER BY sequence DESC LIMIT \(max(0, limit))", logger: logger
            ) { row in try PostgresRows.journalEntry(row, url: self.url) }.reversed()
        }
    }

    // MARK: - Inside a transaction

    /// The new guest, placed: the project, flavor and image exist, the quota has room, and the
    /// scheduler found a host; nothing written yet.
    func placeNew(_ connection: PostgresConnection, _ request: GuestRequest, clientToken: String?) async throws
        -> CloudGuest
    {
        guard
            let project = try await PostgresRows.all(
                connection, "SELECT * FROM projects WHERE name = \(request.project)", logger: logger,
                PostgresRows.project
            ).first
        else { throw ControlError(.notFound, "no project \(request.project): create it first") }
        guard
            let flavor = try await PostgresRows.all(
                connection, "SELECT * FROM flavors WHERE name = \(request.flavor)", logger: logger, PostgresRows.flavor
            ).first
        else { throw ControlError(.notFound, "no flavor \(request.flavor): list the flavors and pick one") }
        guard
            let image = try await PostgresRows.all(
                connection, "SELECT * FROM images WHERE name = \(request.image)", logger: logger,
                { row in try PostgresRows.image(row, url: url) }
            ).first
        else { throw ControlError(.notFound, "no image \(request.image): list the images and pick one") }
        let hosts = try await allHosts(connection)
        try ControlRules.checkRunnable(flavor, image, hosts: hosts)
        try ControlRules.checkQuota(project, try await usage(connection, project: request.project), flavor)
        let host = try await chooseHost(connection, request, flavor, image, hosts: hosts)
        let now = now()
        if ControlRules.mustWake(host, among: hosts) {
            try await connection.query(
                "UPDATE hosts SET power = 'waking', power_since_ms = \(PostgresRows.milliseconds(now)) WHERE id = \(host)",
                logger: logger)
        }
        return CloudGuest(
            id: .random(), request: request, resources: flavor.resources,
            pricePerSecondMicros: flavor.pricePerSecondMicros, imageKind: image.kind,
            diskTemplatePath: image.diskTemplatePath, host: host, state: .pending, errorReason: nil,
            clientToken: clientToken, generation: 1, createdAt: now, stateSince: now)
    }

    /// A host in the lease's pool for a guest of the lessee; otherwise the scheduler's choice
    /// beside the slots of delivered leases, if the leases admitted keep their room.
    func chooseHost(
        _ connection: PostgresConnection, _ request: GuestRequest, _ flavor: Flavor, _ image: Image,
        hosts: [HostRecord]
    ) async throws -> String {
        let now = now()
        if let leaseID = request.lease {
            return try ControlRules.choosePoolHost(
                request, lease: try await fetchLeases(connection, "id = \(leaseID)").first,
                guests: try await holdingGuests(connection, "lease_id = \(leaseID)"),
                hosts: hosts.filter { $0.kvm || image.kind != .kvm }, now: now, heartbeatTimeout: heartbeatTimeout)
        }
        var usage = try await usageByHost(connection)
        let leases = try await fetchLeases(
            connection,
            "state = 'admitted' AND phase != 'ended' AND (end_ms > \(Billing.milliseconds(now)) OR at_end = 'suspend')")
        if !leases.isEmpty {
            let reserve = ControlRules.poolReserve(
                leases: leases, guests: try await holdingGuests(connection, "lease_id IS NOT NULL"))
            usage.merge(reserve, uniquingKeysWith: +)
            try ControlRules.checkLeasesKeepRoom(
                for: flavor, leases: leases, onDemand: try await onDemandUsage(connection), hosts: hosts, now: now,
                heartbeatTimeout: heartbeatTimeout)
        }
        return try ControlRules.chooseHost(
            PlacementRequest(flavor.resources, needsKVM: image.kind == .kvm), hosts: hosts, usage: usage,
            policy: policy, now: now, heartbeatTimeout: heartbeatTimeout)
    }

    func fetchGuest(_ connection: PostgresConnection, _ id: GuestID) async throws -> CloudGuest? {
        try await PostgresRows.all(
            connection, "SELECT \(unescaped: PostgresRows.guestColumns) FROM guests WHERE id = \(id.hex)",
            logger: logger
        ) { row in try PostgresRows.guest(row, url: url) }.first
    }

    func guest(_ connection: PostgresConnection, project: String, clientToken: String) async throws -> CloudGuest? {
        try await PostgresRows.all(
            connection,
            """
            SELECT \(unescaped: PostgresRows.guestColumns) FROM guests
            WHERE project = \(project) AND client_token = \(clientToken)
            """, logger: logger
        ) { row in try PostgresRows.guest(row, url: url) }.first
    }
}
