import FerryHostModel
import FerryInventory
import FerryVMM
import Foundation
import Logging
import Synchronization

/// The guests this agent owns: the inventory (`STATE/inventory.sqlite`), their `ferry vmm`
/// processes and their files. Every state change goes through the inventory's checked
/// transitions with a cause; one operation per guest at a time (another gets 409 `busy`, naming
/// the one that runs). Every method blocks (SQLite, spawning, control sockets): call it on
/// `BlockingWork`, never on the cooperative pool.
public final class HostGuests: Sendable {
    public let inventory: SQLiteInventory
    public let files: GuestFiles
    let logger: Logger
    private let operations = Mutex<[GuestName: String]>([:])
    let watches: GuestWatches

    public init(inventory: SQLiteInventory, files: GuestFiles, logger: Logger) {
        self.inventory = inventory
        self.files = files
        self.logger = logger
        watches = GuestWatches(logger: logger)
    }

    // MARK: One operation per guest

    /// Runs `body` as the guest's only operation, named `operation`; 409 `busy` if another runs.
    func exclusively<T>(_ name: GuestName, _ operation: String, _ body: () throws(AgentAPIError) -> T)
        throws(AgentAPIError) -> T
    {
        if let running = claim(name, operation) {
            throw AgentAPIError(
                .conflict, .busy, "guest \(name) is busy: \(running) runs; try again once it has ended")
        }
        defer { _ = operations.withLock { $0.removeValue(forKey: name) } }
        return try body()
    }

    /// Claims the guest for `operation` unless something runs; the caller must `release`.
    func tryClaim(_ name: GuestName, _ operation: String) -> Bool { claim(name, operation) == nil }

    /// The check the agent makes itself when a guest's vmm closes its control connection (a
    /// moment after a suspend or a stop answered): an operation waits for it rather than being
    /// refused, so a client's suspend followed at once by a migration is not told `busy`.
    static let crashCheck = "crash check"

    /// Claims the guest for `operation`; nil if claimed, else the operation that runs. A crash
    /// check is waited for (up to 5 s) unless `operation` is one.
    private func claim(_ name: GuestName, _ operation: String) -> String? {
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            let holder = operations.withLock { running -> String? in
                if let other = running[name] { return other }
                running[name] = operation
                return nil
            }
            guard holder == Self.crashCheck, operation != Self.crashCheck, ContinuousClock.now < deadline else {
                return holder
            }
            usleep(5_000)
        }
    }

    func release(_ name: GuestName) { _ = operations.withLock { $0.removeValue(forKey: name) } }

    func busyNames() -> Set<GuestName> { operations.withLock { Set($0.keys) } }

    // MARK: Reading

    public func list() throws(AgentAPIError) -> [GuestRecord] {
        try Self.inventoryCall { () throws(InventoryError) in try inventory.guests() }
    }

    public func show(_ name: GuestName, journal: Int = 20) throws(AgentAPIError) -> (GuestRecord, [JournalEntry]) {
        let record = try require(name)
        let entries = try Self.inventoryCall { () throws(InventoryError) in
            try inventory.journal(of: record.id, latest: journal)
        }
        return (record, entries)
    }

    func require(_ name: GuestName) throws(AgentAPIError) -> GuestRecord {
        guard let record = try Self.inventoryCall({ () throws(InventoryError) in try inventory.guest(named: name) })
        else {
            throw AgentAPIError(.notFound, .notFound, "no guest named \(name) on this host; GET /v1/guests lists them")
        }
        return record
    }

    /// Runs an inventory call; its error as the API's.
    static func inventoryCall<T>(_ body: () throws(InventoryError) -> T) throws(AgentAPIError) -> T {
        do { return try body() } catch { throw apiError(error) }
    }

    static func apiError(_ error: InventoryError) -> AgentAPIError {
        switch error.code {
        case .notFound: AgentAPIError(.notFound, .notFound, error.message)
        case .alreadyExists, .transitionRefused, .stale, .notRemovable:
            AgentAPIError(.conflict, .conflict, error.message)
        case .invalidSpecification: AgentAPIError(.unprocessableContent, .invalidField, error.message)
        case .insufficientCapacity: AgentAPIError(.conflict, .insufficientCapacity, error.message)
        case .unusableDatabase, .database: AgentAPIError(.internalServerError, .internalError, error.description)
        }
    }

    // MARK: Create and delete

    /// Defines a guest. `id` is the ID a controller gave it (a random one without); a create
    /// repeated with the same name, ID and specification returns the guest it made (a controller
    /// retrying after a lost answer or a restart), with `created` false.
    public func create(_ requested: GuestSpecification, id: GuestID? = nil) throws(AgentAPIError) -> (
        record: GuestRecord, created: Bool
    ) {
        let spec = files.resolvingDiskPaths(requested)
        return try exclusively(spec.name, "create") { () throws(AgentAPIError) -> (GuestRecord, Bool) in
            if let existing = try Self.inventoryCall({ () throws(InventoryError) in
                try inventory.guest(named: spec.name)
            }) {
                if let id, existing.id == id, existing.specification == spec { return (existing, false) }
                throw AgentAPIError(
                    .conflict, .conflict, "a guest named \(spec.name) exists already; choose another name",
                    field: "name")
            }
            let created = try files.createDisks(spec)
            do throws(InventoryError) {
                return (try inventory.create(spec, id: id ?? .random(), cause: "created through the API"), true)
            } catch {
                files.removeFiles(created)
                throw Self.apiError(error)
            }
        }
    }

    public func delete(_ name: GuestName, removeDisks: Bool) throws(AgentAPIError) {
        try exclusively(name, "delete") { () throws(AgentAPIError) in
            let record = try require(name)
            guard record.state.removable else {
                throw AgentAPIError(
                    .conflict, .conflict,
                    "guest \(name) is \(record.state.rawValue): its process may run; stop it first (POST"
                        + " /v1/guests/\(name)/stop), then delete it")
            }
            if let answer = GuestProcess.hello(socket: files.socketPath(record.id)), answer.id == record.id {
                throw AgentAPIError(
                    .conflict, .conflict,
                    "guest \(name) is \(record.state.rawValue) but its process \(answer.facts.pid) still answers;"
                        + " start it to adopt it, or stop it, then delete it")
            }
            _ = try Self.inventoryCall { () throws(InventoryError) in
                try inventory.remove(
                    name, cause: "deleted through the API" + (removeDisks ? " with its disks" : ", disks kept"))
            }
            files.removeFiles(files.processFiles(record.id))
            if removeDisks { files.removeFiles(record.specification.disks.compactMap(\.path)) }
        }
    }
}
