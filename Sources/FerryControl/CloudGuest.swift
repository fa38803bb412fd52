import FerryHostModel
import Foundation

/// What a client asks for when it creates a guest.
public struct GuestRequest: Sendable, Equatable, Hashable, Codable {
    public var project: String
    public var name: GuestName
    public var flavor: String
    public var image: String
    /// The delivered lease whose private pool the guest goes into (nil: on-demand capacity).
    public var lease: String?
    /// How the guest may be moved off a host the operator empties (`MigrationPolicy`). Not part
    /// of the request's identity: a create repeated with the same client token after a change of
    /// policy gets the guest, with its policy as it is now.
    public var migrationPolicy: MigrationPolicy

    public init(
        project: String, name: GuestName, flavor: String, image: String, lease: String? = nil,
        migrationPolicy: MigrationPolicy = .liveOnly
    ) {
        self.migrationPolicy = migrationPolicy
        self.lease = lease
        self.project = project
        self.name = name
        self.flavor = flavor
        self.image = image
    }
}

/// How the control plane may move a guest off a host it empties (a drain): `live_only` (the
/// default) moves it by live migration alone, and a guest that cannot go live stays, named with
/// the reason; `live_then_cold` moves it cold when it cannot go live (it is shut down, its disk
/// moves, it boots on the other host: a downtime of seconds), and moves it cold when it is
/// stopped (it stays stopped there).
public enum MigrationPolicy: String, Sendable, Codable, CaseIterable, Hashable {
    case liveOnly = "live_only"
    case liveThenCold = "live_then_cold"
}

/// One guest as the controller holds it.
public struct CloudGuest: Sendable, Equatable {
    /// The guest's identity for life (the same ID its host's agent and VMM carry).
    public var id: GuestID
    public var request: GuestRequest
    /// The flavor's resources when the guest was created (what it holds on its host).
    public var resources: Resources
    public var pricePerSecondMicros: Int64
    public var imageKind: GuestSpecification.Kind
    public var diskTemplatePath: String
    /// The host the scheduler chose.
    public var host: String
    public var state: CloudGuestState
    /// Why the guest is in `error` (nil in any other state).
    public var errorReason: String?
    /// The client's idempotency token, if it gave one (unique within the project).
    public var clientToken: String?
    /// Starts at 1 and grows by one with every change of the row.
    public var generation: Int64
    public var createdAt: Date
    public var stateSince: Date
    /// The host the guest is being live-migrated to (`ControlStore.beginMove`), nil when it is not
    /// moving. While it is set the guest holds its resources on both hosts.
    public var movingTo: String?

    public init(
        id: GuestID, request: GuestRequest, resources: Resources, pricePerSecondMicros: Int64,
        imageKind: GuestSpecification.Kind, diskTemplatePath: String, host: String, state: CloudGuestState,
        errorReason: String?, clientToken: String?, generation: Int64, createdAt: Date, stateSince: Date,
        movingTo: String? = nil
    ) {
        self.id = id
        self.request = request
        self.resources = resources
        self.pricePerSecondMicros = pricePerSecondMicros
        self.imageKind = imageKind
        self.diskTemplatePath = diskTemplatePath
        self.host = host
        self.state = state
        self.errorReason = errorReason
        self.clientToken = clientToken
        self.generation = generation
        self.createdAt = createdAt
        self.stateSince = stateSince
        self.movingTo = movingTo
    }

    public var project: String { request.project }
    public var name: GuestName { request.name }
    public var migrationPolicy: MigrationPolicy { request.migrationPolicy }
}

/// What `createGuest` did: made `guest`, or (`created` false) found it made by an earlier
/// request with the same client token.
public struct GuestCreation: Sendable, Equatable {
    public var guest: CloudGuest
    public var created: Bool

    public init(guest: CloudGuest, created: Bool) {
        self.guest = guest
        self.created = created
    }
}

/// One row of the controller's journal: a guest recorded (`from` nil) or changing state.
public struct CloudJournalEntry: Sendable, Equatable {
    /// Grows with every row, never reused.
    public var sequence: Int64
    public var guestID: GuestID
    public var time: Date
    public var from: CloudGuestState?
    public var to: CloudGuestState
    public var cause: String

    public init(
        sequence: Int64, guestID: GuestID, time: Date, from: CloudGuestState?, to: CloudGuestState, cause: String
    ) {
        self.sequence = sequence
        self.guestID = guestID
        self.time = time
        self.from = from
        self.to = to
        self.cause = cause
    }
}
