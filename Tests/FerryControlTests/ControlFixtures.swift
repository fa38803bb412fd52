import FerryHostModel
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import FerryControl
@testable import FerryControlPostgres

let gib = 1 << 30

/// The store's log at warning and above (the tests' output stays readable).
let quietLogger: Logger = {
    var logger = Logger(label: "ferry.control")
    logger.logLevel = .warning
    return logger
}()

/// How long a host stays fresh after it registers or beats, in the tests' stores: a day, so a
/// test that the machine's load slows down between registering a host and creating a guest
/// does not find the host silent (the tests of silence set a clock and a timeout of their own).
let testHeartbeatTimeout = Duration.seconds(86_400)

/// A store on a fresh file in `scratch`, with a small catalogue: flavors `small` (1 vCPU, 1 GiB,
/// 10 GiB of disk) and `large` (4 vCPUs, 8 GiB, 40 GiB), image `tiny`, project `alpha`.
func storeWithCatalogue(
    _ scratch: Scratch,
    quota: Quota = Quota(guests: 1000, resources: Resources(vcpus: 1 << 20, memoryBytes: 1 << 50, diskBytes: 1 << 50)),
    policy: PlacementPolicy = .spread, heartbeatTimeout: Duration = testHeartbeatTimeout,
    clock: @escaping @Sendable () -> Date = { Date() }
) async throws -> SQLiteControlStore {
    let store = try SQLiteControlStore(
        path: scratch.file("control.sqlite"), policy: policy, heartbeatTimeout: heartbeatTimeout, clock: clock,
        logger: quietLogger)
    try await store.addFlavor(small)
    try await store.addFlavor(large)
    try await store.addImage(Image(name: "tiny", kind: .builtin, diskTemplatePath: "/var/lib/ferry/images/tiny.img"))
    try await store.addProject(Project(name: "alpha", quota: quota))
    return store
}

/// Where a store-contract test keeps its state. `available` is SQLite, and PostgreSQL when the
/// run has a server (FERRY_TEST_POSTGRES).
enum StoreBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    static var available: [StoreBackend] { TestPostgres.url == nil ? [.sqlite] : [.sqlite, .postgres] }

    var testDescription: String { rawValue }

    /// A store with the fixtures' catalogue (see `storeWithCatalogue`): a file in `scratch`, or a
    /// fresh database on the test server.
    func store(
        _ scratch: Scratch,
        quota: Quota = Quota(
            guests: 1000, resources: Resources(vcpus: 1 << 20, memoryBytes: 1 << 50, diskBytes: 1 << 50)),
        policy: PlacementPolicy = .spread, heartbeatTimeout: Duration = testHeartbeatTimeout,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) async throws -> any ControlStore {
        switch self {
        case .sqlite:
            try await storeWithCatalogue(
                scratch, quota: quota, policy: policy, heartbeatTimeout: heartbeatTimeout, clock: clock)
        case .postgres:
            try await TestPostgres.store(quota: quota, policy: policy, heartbeatTimeout: heartbeatTimeout, clock: clock)
        }
    }

    /// Lets a PostgreSQL store's pool go (a SQLite store closes with its last reference).
    func close(_ store: any ControlStore) {
        if let store = store as? PostgresControlStore { Task { await store.close() } }
    }
}

let small = Flavor(
    name: "small", resources: Resources(vcpus: 1, memoryBytes: gib, diskBytes: 10 * gib), pricePerSecondMicros: 12)
let large = Flavor(
    name: "large", resources: Resources(vcpus: 4, memoryBytes: 8 * gib, diskBytes: 40 * gib),
    pricePerSecondMicros: 96)

/// A host with room for `slots` guests of flavor `small` (and no more in any dimension).
func host(_ id: String, slots: Int) -> HostRegistration {
    HostRegistration(
        id: id, address: "10.0.0.1:7070",
        capacity: Resources(vcpus: slots, memoryBytes: slots * gib, diskBytes: slots * 10 * gib))
}

func request(_ name: String, flavor: String = "small", project: String = "alpha") -> GuestRequest {
    GuestRequest(project: project, name: try! GuestName(name), flavor: flavor, image: "tiny")
}

/// Runs `body` and returns the ControlError it threw (nil if it threw none).
func controlError<T>(_ body: () async throws(ControlError) -> T) async -> ControlError? {
    do {
        _ = try await body()
        return nil
    } catch {
        return error
    }
}

/// Runs `body(0..<count)` as `count` child tasks at once and returns when all have finished.
/// The store's work runs on GRDB's own queues (one writer per store, readers in its pool), so the
/// races are between those queues and, with several stores on one file, SQLite's file lock.
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) async -> Void) async {
    await withTaskGroup(of: Void.self) { group in
        for index in 0..<count { group.addTask { await body(index) } }
    }
}

/// The journal and the guests table never disagree: each guest's rows form a chain (the first
/// from nil, each `from` the previous `to`) that ends in the guest's state.
func expectJournalAgreesWithGuests(
    _ store: any ControlStore, project: String = "alpha", sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    for guest in try await store.guests(project: project) {
        let journal = try await store.journal(of: guest.id)
        #expect(journal.first?.from == nil && !journal.isEmpty, sourceLocation: sourceLocation)
        for (before, after) in zip(journal, journal.dropFirst()) {
            #expect(after.from == before.to, "guest \(guest.id): the journal breaks", sourceLocation: sourceLocation)
        }
        #expect(
            journal.last?.to == guest.state, "guest \(guest.id): table and journal disagree",
            sourceLocation: sourceLocation)
        #expect(Int64(journal.count) == guest.generation, sourceLocation: sourceLocation)
    }
}
