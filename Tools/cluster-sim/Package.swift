// swift-tools-version:6.0
import PackageDescription

// The control plane's decisions driven against simulated clusters (no sockets, no database):
// the scheduler's speed on 1,000 hosts (issue 16), auto-scaling on a noisy wave against an oracle
// (issue 17), balancing passes and consolidation at low demand (issue 18); issue 18's drain
// simulation belongs here too. Depends on FerryDecisions alone, so it builds in
// seconds and CI builds it (.ci/run) so that it cannot rot.
// Run: swift run -c release --package-path Tools/cluster-sim cluster-sim placement|scaling|balance|consolidate [options]
let package = Package(
    name: "FerryClusterSim",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Ferry", path: "../..")
    ],
    targets: [
        .executableTarget(
            name: "cluster-sim",
            dependencies: [
                .product(name: "FerryDecisions", package: "Ferry")
            ])
    ],
    swiftLanguageModes: [.v6]
)
