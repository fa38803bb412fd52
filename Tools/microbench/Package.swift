// swift-tools-version:6.0
import PackageDescription

// Microbenchmarks of Ferry's hot paths, kept out of the main build and tests.
// Run: swift run -c release --package-path Tools/microbench microbench [--pages N] [--filter NAME]
//
// The root package exports only the FerryMigration library; the benchmarks import FerryCodec,
// FerryProtocol, FerrySystem, FerryGuest and CLZ4, which are in its dependency closure (SwiftPM
// accepts that, also with --explicit-target-dependency-import-check error). Once the root exports
// a library per module, depend on exactly what is measured instead:
//     .product(name: "FerryCodec", package: "Ferry"),
//     .product(name: "FerryProtocol", package: "Ferry"),
//     .product(name: "FerrySystem", package: "Ferry"),
//     .product(name: "FerryGuest", package: "Ferry"),
let package = Package(
    name: "FerryMicrobench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Ferry", path: "../.."),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .executableTarget(name: "microbench", dependencies: [
            .product(name: "FerryMigration", package: "Ferry"),
            // The tracker benchmark runs the built-in guest, which takes a Logger.
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
