// swift-tools-version:6.0
import PackageDescription

// Journaled transitions per second of the agent's inventory (FerryInventory on SQLite), kept
// out of the main build and tests like Tools/microbench, and apart from it so that measuring
// the inventory builds only the inventory (not the codec, transport and swift-crypto).
// Run: swift run -c release --package-path Tools/inventory-bench inventory-bench [--dir DIR]
let package = Package(
    name: "FerryInventoryBench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Ferry", path: "../.."),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .executableTarget(name: "inventory-bench", dependencies: [
            .product(name: "FerryInventory", package: "Ferry"),
            .product(name: "FerryHostModel", package: "Ferry"),
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
