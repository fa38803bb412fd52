// swift-tools-version:6.0
import PackageDescription

// Microbenchmarks of Ferry's hot paths, kept out of the main build and tests.
// Run: swift run -c release --package-path Tools/microbench microbench [--pages N] [--filter NAME]
//
// Depends on exactly the modules it measures; CLZ4 (a system library) comes with FerryCodec.
let package = Package(
    name: "FerryMicrobench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Ferry", path: "../.."),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .executableTarget(name: "microbench", dependencies: [
            .product(name: "FerryCodec", package: "Ferry"),
            .product(name: "FerryProtocol", package: "Ferry"),
            .product(name: "FerrySystem", package: "Ferry"),
            .product(name: "FerryTransport", package: "Ferry"),
            .product(name: "FerryGuest", package: "Ferry"),
            // The tracker benchmark runs the built-in guest, which takes a Logger.
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
