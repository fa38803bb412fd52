// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        .library(name: "FerryMigration", targets: ["FerryMigration"]),
        .library(name: "FerryGuestMigration", targets: ["FerryGuestMigration"]),
        .library(name: "FerryKVMMigration", targets: ["FerryKVMMigration"]),
        // What a VMM's own guest adapter needs besides FerryMigration: DeviceStateSection and
        // MemoryRegionDescriptor (FerryProtocol), TrackerChoice/DirtyTracker and MappedRegion
        // (FerrySystem), Endpoint for SourceOptions/DestinationOptions (FerryTransport).
        .library(name: "FerryProtocol", targets: ["FerryProtocol"]),
        .library(name: "FerrySystem", targets: ["FerrySystem"]),
        .library(name: "FerryTransport", targets: ["FerryTransport"]),
        // The page codec (LZ4 + XXH3 batches) and the built-in test guest, for tools that
        // measure them (Tools/microbench) and for VMMs that want the codec alone.
        .library(name: "FerryCodec", targets: ["FerryCodec"]),
        .library(name: "FerryGuest", targets: ["FerryGuest"]),
        .library(name: "FerryHostModel", targets: ["FerryHostModel"]),
        // The host agent's inventory (guests, states, journal) on SQLite; a product for
        // Tools/inventory-bench, which measures journaled transitions per second.
        .library(name: "FerryInventory", targets: ["FerryInventory"]),
        .library(name: "FerryVMM", targets: ["FerryVMM"]),
        // Moving one disk file between two hosts: allocated extents only, verified (Protocol.md 10).
        .library(name: "FerryDiskMove", targets: ["FerryDiskMove"]),
        .library(name: "FerryAgent", targets: ["FerryAgent"]),
        // The control plane's state and decisions (cluster model, scheduler, SQLite store).
        .library(name: "FerryControl", targets: ["FerryControl"]),
        // The control plane's pure decisions alone (for simulators and benchmarks).
        .library(name: "FerryDecisions", targets: ["FerryDecisions"]),
        // The control plane's state on PostgreSQL, for several controllers at once.
        .library(name: "FerryControlPostgres", targets: ["FerryControlPostgres"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // The inventory's SQLite access (docs/design.md, "Inventory"); links Debian's libsqlite3.
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        // The host agent (FerryAgent): HTTP server, graceful stop on signals, Prometheus metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        // The control plane's store on PostgreSQL (FerryControlPostgres).
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // The web console's server-rendered pages (FerryController).
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // C: what Swift cannot express (userfaultfd ABI, PAGEMAP_SCAN, SIGSEGV handler).
        .target(name: "CFerryShims"),
        // C: KVM ioctl numbers and the structs with flexible arrays/unions (linux/kvm.h).
        .target(name: "CKVM"),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),

        .target(
            name: "FerrySystem",
            dependencies: [
                "CFerryShims",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(name: "FerryProtocol"),
        .target(name: "FerryCodec", dependencies: ["CLZ4", "CXXHash", "FerryProtocol"]),
        // C: AEAD records in place through libcrypto's EVP interface (Debian's libssl-dev).
        .target(name: "CAEAD", linkerSettings: [.linkedLibrary("crypto")]),
        // C: scrypt, SHA-256 and a constant-time comparison from libcrypto, for the control plane's accounts.
        .target(name: "CAccountCrypto", linkerSettings: [.linkedLibrary("crypto")]),
        .target(
            name: "FerryTransport",
            dependencies: [
                "FerryProtocol", "FerrySystem", "CAEAD", "CFerryShims",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "FerryGuest",
            dependencies: [
                "FerrySystem",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "FerryMigration",
            dependencies: [
                "FerrySystem", "FerryProtocol", "FerryCodec", "FerryTransport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Engine layer: the disk move (one disk file, source and destination, Protocol.md section 10).
        .target(
            name: "FerryDiskMove",
            dependencies: [
                "FerrySystem", "FerryProtocol", "FerryCodec", "FerryTransport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "FerryKVM",
            dependencies: [
                "CKVM", "FerrySystem", "FerryGuest",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Guest adapters: each guest kind plugs into the engine from its own target.
        .target(
            name: "FerryGuestMigration",
            dependencies: [
                "FerryMigration", "FerryGuest", "FerryProtocol", "FerrySystem",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "FerryKVMMigration",
            dependencies: [
                "FerryMigration", "FerryKVM", "FerryProtocol", "FerrySystem",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Host layer: what a guest is on a host (name, specification, lifecycle states), shared by
        // the inventory, the per-guest VMM process, the agent and its API. Pure, no I/O.
        .target(name: "FerryHostModel"),
        // Host layer: the `ferry agent` daemon (HTTP API, request signatures, metrics, host
        // capacity) and the client the CLI and other agents use to talk to it.
        .target(
            name: "FerryAgent",
            dependencies: [
                "FerryHostModel", "FerrySystem", "FerryTransport", "FerryProtocol", "FerryKVM", "CFerryShims",
                "FerryInventory", "FerryVMM", "FerryDiskMove", "FerryDecisions",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Host layer: the agent's inventory on SQLite (guests, journal, schema migrations) and the
        // pure reconciliation of its records with what the agent observes on the host.
        .target(
            name: "FerryInventory",
            dependencies: [
                "FerryHostModel",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Host layer: one `ferry vmm` process per running guest, driven through a control socket
        // (docs/vmm-control.md); the guest-kind registry; the spawn helper an agent starts it with.
        .target(
            name: "FerryVMM",
            dependencies: [
                "FerryMigration", "FerryGuestMigration", "FerryKVMMigration", "FerryKVM", "FerryGuest",
                "FerryHostModel",
                "FerryProtocol", "FerrySystem", "FerryTransport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Cloud layer: the controller's model (hosts, catalogue, projects, quotas, guests and their
        // states, users and their roles), the pure scheduler (Placement) and authorization, and the
        // store on SQLite (docs/control-plane.md).
        // Cloud layer: the control plane's pure decisions (placement, lease admission, scaling,
        // telemetry) and the types they share; no database, no I/O, so simulators link it alone.
        .target(name: "FerryDecisions"),
        .target(
            name: "FerryControl",
            dependencies: [
                "FerryDecisions", "FerryHostModel", "CAccountCrypto",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Cloud layer: the same ControlStore on PostgreSQL (a pool per controller, versioned
        // migrations, writes serialised by an advisory lock), so several controllers can run at once.
        .target(
            name: "FerryControlPostgres",
            dependencies: [
                "FerryControl", "FerryHostModel",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Cloud layer: `ferry control`, the controller's HTTP API over a ControlStore; it reaches the
        // hosts through the agents' API client.
        .target(
            name: "FerryController",
            dependencies: [
                "FerryControl", "FerryAgent", "FerryHostModel", "FerryTransport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "ferry",
            dependencies: [
                "FerryMigration", "FerryGuestMigration", "FerryKVMMigration", "FerryKVM", "FerryGuest", "FerryVMM",
                "FerryHostModel", "FerryAgent", "FerryDiskMove", "FerryControl", "FerryControlPostgres",
                "FerryController",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // The worked example of a third guest kind, written against the public API only
        // (Examples/CounterGuest/README.md), and its loopback migration test.
        .target(
            name: "CounterGuest",
            dependencies: [
                "FerryMigration", "FerryProtocol", "FerrySystem",
                .product(name: "Logging", package: "swift-log"),
            ], path: "Examples/CounterGuest/Sources"),
        .testTarget(
            name: "CounterGuestTests",
            dependencies: [
                "CounterGuest", "FerryMigration", "FerryProtocol", "FerrySystem", "FerryTransport",
                .product(name: "Logging", package: "swift-log"),
            ], path: "Examples/CounterGuest/Tests"),

        // What the test targets share (not a product): the one TCP relay with its independent frame
        // parser, scratch directories, test memory, network namespaces, the machine's
        // requirements (for `.enabled(if:)`) and the tags.
        .target(name: "FerryTestSupport", dependencies: ["FerryKVM", "FerryCodec"], path: "Tests/FerryTestSupport"),

        .testTarget(name: "FerrySystemTests", dependencies: ["FerrySystem", "FerryTestSupport"]),
        .testTarget(name: "FerryProtocolTests", dependencies: ["FerryProtocol", "FerryTestSupport"]),
        .testTarget(name: "FerryCodecTests", dependencies: ["FerryCodec", "CLZ4", "FerryTestSupport"]),
        .testTarget(
            name: "FerryTransportTests",
            dependencies: [
                "FerryTransport", "FerryProtocol", "FerryTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .testTarget(name: "FerryHostModelTests", dependencies: ["FerryHostModel"]),
        .testTarget(
            name: "FerryAgentTests",
            dependencies: [
                "FerryAgent", "FerryHostModel", "FerryInventory", "FerryTransport", "FerrySystem", "FerryTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // A process that writes to an inventory until the kill -9 test kills it.
        .executableTarget(
            name: "inventory-writer",
            dependencies: [
                "FerryInventory", "FerryHostModel",
                .product(name: "Logging", package: "swift-log"),
            ], path: "Tests/InventoryWriter"),
        .testTarget(
            name: "FerryInventoryTests",
            dependencies: [
                "FerryInventory", "FerryHostModel", "FerryTestSupport", "inventory-writer",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]),
        .testTarget(
            name: "FerryControlTests",
            dependencies: [
                "FerryAgent", "FerryControl", "FerryControlPostgres", "FerryController", "FerryDecisions",
                "FerryHostModel",
                "FerryTestSupport",
                "FerryTransport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "FerryGuestTests", dependencies: ["FerryGuest", "FerryTestSupport"]),
        .testTarget(
            name: "FerryKVMTests",
            dependencies: [
                "FerryKVM", "FerryKVMMigration", "FerryProtocol", "FerryGuest", "FerryMigration", "FerryTransport",
                "FerrySystem", "FerryTestSupport",
            ]),
        .testTarget(
            name: "FerryDiskMoveTests",
            dependencies: [
                "FerryDiskMove", "FerryCodec", "FerryProtocol", "FerryTransport", "FerrySystem", "FerryGuest",
                "FerryTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The tools that measure and simulate (Tools/…/README.md), targets of this package so that
        // every build and test run compiles them (they cannot rot) on the modules already built;
        // `swift run -c release NAME` builds only what NAME needs.
        // Microbenchmarks of the hot paths: codec, frames, dirty tracking.
        .executableTarget(
            name: "microbench",
            dependencies: [
                "FerryCodec", "FerryProtocol", "FerrySystem", "FerryTransport", "FerryGuest",
                .product(name: "Logging", package: "swift-log"),
            ], path: "Tools/microbench/Sources/microbench"),
        // Journaled transitions per second of the agent's inventory (the inventory and GRDB only).
        .executableTarget(
            name: "inventory-bench",
            dependencies: [
                "FerryInventory", "FerryHostModel", .product(name: "Logging", package: "swift-log"),
            ], path: "Tools/inventory-bench/Sources/inventory-bench"),
        // The control plane's decisions on simulated clusters of up to thousands of hosts.
        .executableTarget(
            name: "cluster-sim", dependencies: ["FerryDecisions"], path: "Tools/cluster-sim/Sources/cluster-sim"),
        .testTarget(
            name: "FerryMigrationTests",
            dependencies: [
                "FerryMigration", "FerryGuestMigration", "FerryKVMMigration", "FerryKVM", "FerryTestSupport",
            ]),
        // Runs the built `ferry` executable as a user would (processes, exit codes, network namespaces).
        // Also drives sources in-process (the --serve leak test) and unit-tests the option types.
        .testTarget(
            name: "FerryCLITests",
            dependencies: [
                "ferry", "FerryMigration", "FerryGuestMigration", "FerryGuest", "FerryProtocol", "FerryTransport",
                "FerrySystem", "FerryTestSupport",
                "FerryVMM", "FerryHostModel", "FerryAgent", "FerryDiskMove", "FerryCodec",
                .product(name: "Logging", package: "swift-log"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
