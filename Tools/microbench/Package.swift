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
    ],
    targets: [
        .executableTarget(name: "microbench", dependencies: [
            .product(name: "FerryMigration", package: "Ferry"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
