import FerryControl
import FerryHostModel
import Foundation

/// The values of each console page (ConsoleTemplates), built from the store's records.
struct LoginView {
    var error: String?
    var name: String
    /// Also in the `ferry_login_csrf` cookie: a login form posted from another site has neither.
    var csrfToken: String
}

struct ProjectsView {
    struct Row {
        var name: String
        var role: String
        var guests: Int
    }
    var projects: [Row]
    /// Stored: Mustache reads stored properties only.
    var hasProjects: Bool

    init(projects: [Row]) {
        self.projects = projects
        hasProjects = !projects.isEmpty
    }
}

struct ProjectView {
    struct GuestRow {
        var id: String
        var name: String
        var state: String
        var flavor: String
        var image: String
        var host: String
    }
    struct ImageRow {
        var name: String
        var kind: String
        var checked: Bool
    }
    struct FlavorRow {
        var name: String
        var vcpus: Int
        var memory: String
        var disk: String
        var pricePerHour: String
        var checked: Bool
    }

    var project: String
    var error: String?
    var guests: [GuestRow]
    var hasGuests: Bool
    var images: [ImageRow]
    var flavors: [FlavorRow]
    var clientToken: String
    var name: String
    var csrfToken: String
    /// The project's auto-scaling groups, set by the page.
    var groups: [GroupRow] = [] { didSet { hasGroups = !groups.isEmpty } }
    var hasGroups = false

    /// The project's live guests (not deleted), the catalogue, and a fresh client token for the
    /// form: a second submit of the same form makes no second guest.
    init(
        project: String, guests: [CloudGuest], flavors: [Flavor], images: [Image], csrfToken: String,
        form: FormFields? = nil, error: String? = nil
    ) {
        self.project = project
        self.error = error
        self.guests = guests.filter { $0.state != .deleted }.map {
            GuestRow(
                id: $0.id.hex, name: $0.name.value, state: $0.state.rawValue, flavor: $0.request.flavor,
                image: $0.request.image, host: $0.host)
        }
        hasGuests = !self.guests.isEmpty
        let chosenImage = form?["image"] ?? images.first?.name
        self.images = images.map { ImageRow(name: $0.name, kind: $0.kind.rawValue, checked: $0.name == chosenImage) }
        let chosenFlavor = form?["flavor"] ?? flavors.first?.name
        self.flavors = flavors.map {
            FlavorRow(
                name: $0.name, vcpus: $0.resources.vcpus, memory: ConsoleFormat.bytes($0.resources.memoryBytes),
                disk: ConsoleFormat.bytes($0.resources.diskBytes),
                pricePerHour: ConsoleFormat.perHour($0.pricePerSecondMicros), checked: $0.name == chosenFlavor)
        }
        clientToken = form?["client_token"] ?? Self.newClientToken()
        name = form?["name"] ?? ""
        self.csrfToken = csrfToken
    }

    static func newClientToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}

struct GuestPageView {
    struct JournalRow {
        var time: String
        var from: String
        var to: String
        var cause: String
    }

    var id: String
    var name: String
    var project: String
    var state: String
    var errorReason: String?
    var host: String
    var hostAddress: String?
    /// The host the guest is being live-migrated to, while it is.
    var movingTo: String?
    var flavor: String
    var image: String
    var vcpus: Int
    var memory: String
    var disk: String
    var createdAt: String
    var billedSeconds: String
    var amount: String
    var pricePerHour: String
    var canStop: Bool
    var canStart: Bool
    var canDelete: Bool
    /// Set by `offer`: the caller's role allows it and the state too.
    var canSuspend = false
    var canResume = false
    /// A site admin's, while the guest runs and is not moving: the hosts it may go to.
    var canMigrate = false
    var destinations: [String] = []
    /// Some action is offered (else the page says there is nothing to do).
    var hasActions = false
    /// What the last action did (after its 303), from a fixed list.
    var notice: String?
    var consoleNote: String?
    var consoleLines: [String]
    var hasConsole: Bool
    /// The usage chart (`UsageChart`, SVG made here, not from user input), set by the page.
    var usageChart = ""
    var journal: [JournalRow]
    var error: String?
    var csrfToken: String

    init(
        _ guest: CloudGuest, journal: [CloudJournalEntry], hostAddress: String?, console: ConsoleOutput,
        csrfToken: String, now: Date, error: String? = nil
    ) {
        id = guest.id.hex
        name = guest.name.value
        project = guest.project
        state = guest.state.rawValue
        errorReason = guest.errorReason
        host = guest.host
        self.hostAddress = hostAddress
        movingTo = guest.movingTo
        flavor = guest.request.flavor
        image = guest.request.image
        vcpus = guest.resources.vcpus
        memory = ConsoleFormat.bytes(guest.resources.memoryBytes)
        disk = ConsoleFormat.bytes(guest.resources.diskBytes)
        createdAt = CloudViews.time(guest.createdAt)
        let bill = GuestBill(guest: guest, journal: journal, now: now)
        billedSeconds = InvoiceView.decimal(bill.billedMilliseconds, places: 3)
        amount = InvoiceView.decimal(bill.amountMicros, places: 6)
        pricePerHour = ConsoleFormat.perHour(guest.pricePerSecondMicros)
        canStop = guest.state == .running
        canStart = guest.state == .stopped
        canDelete = [.pending, .stopped, .suspended, .error].contains(guest.state)
        consoleNote = console.note
        consoleLines = console.lines
        hasConsole = !console.lines.isEmpty
        self.journal = journal.map {
            JournalRow(
                time: CloudViews.time($0.time), from: $0.from?.rawValue ?? "", to: $0.to.rawValue, cause: $0.cause)
        }
        self.error = error
        self.csrfToken = csrfToken
    }

    /// Offers what `principal` may do to the guest in its state; `destinations` are the hosts
    /// that take guests (the guest's own is left out).
    mutating func offer(_ principal: Principal, guest: CloudGuest, destinations: [String]) {
        func may(_ action: ProjectAction) -> Bool {
            Authorization.decide(principal, action, project: guest.project) == .allow
        }
        canStop = canStop && may(.stopGuest)
        canStart = canStart && may(.startGuest)
        canDelete = canDelete && may(.deleteGuest)
        let still = guest.state == .running && guest.movingTo == nil
        canSuspend = still && may(.stopGuest)
        canResume = guest.state == .suspended && may(.startGuest)
        canMigrate = still && Authorization.decide(principal, .migrateGuests) == .allow
        self.destinations = canMigrate ? destinations.filter { $0 != guest.host } : []
        hasActions = canStop || canStart || canDelete || canSuspend || canResume || canMigrate
    }

    /// The notices of `?done=ACTION` (a fixed list: the query cannot put words on the page).
    static func notice(_ action: String?, guest: CloudGuest) -> String? {
        switch action ?? "" {
        case "stop": "Stopped: it keeps its disk; Start runs it again."
        case "start": "Starting on host \(guest.host)."
        case "suspend": "Suspended: host \(guest.host) saved it to its suspend file; Resume restores it."
        case "resume": "Resuming on host \(guest.host) from its suspend file."
        case "migrate":
            guest.movingTo.map { "Moving to host \($0) by live migration." }
                ?? "The move has ended: the guest is on host \(guest.host)."
        default: nil
        }
    }

    /// Pages of a guest that is changing reload themselves (no JavaScript).
    static func refreshes(_ guest: CloudGuest) -> Bool {
        [.pending, .building, .stopping].contains(guest.state) || guest.movingTo != nil
    }
}

/// The last lines of a guest's console, as its host's agent keeps them, or why there are none.
struct ConsoleOutput: Sendable {
    var lines: [String]
    var note: String?
}

struct AdminView {
    var csrfToken: String
    struct HostRow {
        var id: String
        var address: String
        var vcpus: Int
        var usedVCPUs: Int
        var memory: String
        var usedMemory: String
        var disk: String
        var usedDisk: String
        var kvm: String
        var health: String
        /// What the agent said is wrong, and while quarantined since when and the deadline.
        var healthReason: String
        var quarantine: String
        var takesGuests: String
        var lastHeartbeat: String
        /// `active`, `draining`, `drained`; the drain's summary line while this controller has
        /// one; the form that changes it (`drain` or `undrain`).
        var mode: String
        /// `on`, `standby` or `waking`.
        var power: String
        var drain: String
        var action: String
        var actionLabel: String
    }
    struct ProjectRow {
        var name: String
        var guests: Int
        var quotaGuests: Int
        var vcpus: Int
        var quotaVCPUs: Int
        var memory: String
        var quotaMemory: String
        var disk: String
        var quotaDisk: String
    }
    var hosts: [HostRow]
    var projects: [ProjectRow]

    /// `since T; empty by D` for a quarantined host, else empty.
    static func quarantine(_ host: HostRecord) -> String {
        guard host.quarantined else { return "" }
        let since = host.quarantinedAt.map { "since \(CloudViews.time($0))" } ?? "quarantined"
        return host.evacuateBy.map { "\(since); empty by \(CloudViews.time($0))" } ?? since
    }

    init(
        hosts: [HostRecord], usage: [String: Resources], projects: [(Project, ProjectUsage)], now: Date,
        heartbeatTimeout: Duration, drains: [String: String] = [:], csrfToken: String = ""
    ) {
        self.csrfToken = csrfToken
        self.hosts = hosts.map { host in
            let used = usage[host.id] ?? .zero
            return HostRow(
                id: host.id, address: host.address, vcpus: host.capacity.vcpus, usedVCPUs: used.vcpus,
                memory: ConsoleFormat.bytes(host.capacity.memoryBytes),
                usedMemory: ConsoleFormat.bytes(used.memoryBytes),
                disk: ConsoleFormat.bytes(host.capacity.diskBytes), usedDisk: ConsoleFormat.bytes(used.diskBytes),
                kvm: host.kvm ? "yes" : "no", health: host.health.rawValue, healthReason: host.healthReason,
                quarantine: Self.quarantine(host),
                takesGuests: host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout) ? "yes" : "no",
                lastHeartbeat: CloudViews.time(host.lastHeartbeat), mode: host.mode.rawValue,
                power: host.power.rawValue, drain: drains[host.id] ?? "",
                action: host.mode == .active ? "drain" : "undrain",
                actionLabel: host.mode == .active ? "Drain" : "Undrain")
        }
        self.projects = projects.map { project, use in
            ProjectRow(
                name: project.name, guests: use.guests, quotaGuests: project.quota.guests, vcpus: use.resources.vcpus,
                quotaVCPUs: project.quota.resources.vcpus, memory: ConsoleFormat.bytes(use.resources.memoryBytes),
                quotaMemory: ConsoleFormat.bytes(project.quota.resources.memoryBytes),
                disk: ConsoleFormat.bytes(use.resources.diskBytes),
                quotaDisk: ConsoleFormat.bytes(project.quota.resources.diskBytes))
        }
    }
}
