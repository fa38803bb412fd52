import ArgumentParser
import FerryAgent
import FerryGuest
import FerryHostModel
import Foundation

/// `ferry guest create`: from a specification file (the API's JSON) or from typed options.
struct GuestCreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Define a guest on the agent and create its disks (sparse files).",
        discussion: """
            Give --spec FILE (a GuestSpecification as JSON, docs/agent-api.yaml) or --name with the typed \
            options. A disk without a path goes to the agent's STATE/disks/NAME.DISK.raw. Example: \
            ferry guest create --name web-1 --kind builtin --vcpus 2 --memory 64M --disk 64M
            """)

    @OptionGroup var client: AgentClientOptions
    @Flag(help: "Print the agent's JSON as it is.") var json = false

    @Option(help: ArgumentHelp("A GuestSpecification as JSON.", valueName: "file")) var spec: String?
    @Option(help: "The guest's name (a-z, 0-9, '-').") var name: String?
    @Option(help: "builtin (no KVM needed) or kvm.") var kind = "builtin"
    @Option(help: "vCPUs (1-64).") var vcpus = 1
    @Option(help: "Memory, like 64M or 1G (a multiple of 4 KiB, 1 MiB to 64 GiB).") var memory = "64M"
    @Option(
        help: ArgumentHelp(
            "A disk: SIZE, NAME:SIZE or NAME:SIZE:/ABSOLUTE/PATH (repeatable; the first is named root).",
            valueName: "disk"))
    var disk: [String] = []
    @Option(help: "The built-in guest's workload (ferry send --workload syntax).") var workload: String?
    @Option(help: "The guest's seed.") var seed: UInt64 = 1
    @Option(help: "Locally administered MAC, 02:xx:xx:xx:xx:xx.") var mac: String?
    @Option(help: "The guest's IPv4 address.") var ipv4: String?

    func validate() throws {
        guard (spec == nil) != (name == nil) else {
            throw ValidationError("give --spec FILE or --name NAME (with the typed options), not both or neither")
        }
    }

    func run() throws {
        runReportingErrors {
            let body = try requestBody()
            let answer = try agentCall(try client.makeClient(), "POST", "/v1/guests", body: body)
            if json { return FileHandle.standardOutput.write(Data(answer)) }
            let guest = try decodeAnswer(GuestView.self, answer, "POST /v1/guests")
            let disks = guest.specification.disks.map {
                "\($0.name) \(GuestText.size($0.sizeBytes)) at \($0.path ?? "?")"
            }
            HumanOutput.print(
                "guest \(guest.specification.name) defined (ID \(guest.id))"
                    + (disks.isEmpty ? "" : "; disks: " + disks.joined(separator: ", ")))
        }
    }

    private func requestBody() throws -> [UInt8] {
        if let spec {
            guard let data = FileManager.default.contents(atPath: spec) else {
                throw CommandError.configuration("--spec \(spec): cannot read the file; check its path")
            }
            return Array(data)
        }
        let specification = GuestSpecification(
            name: try checked("--name") { () throws(HostModelError) in try GuestName(name ?? "") },
            kind: try checked("--kind") { () throws(HostModelError) -> GuestSpecification.Kind in
                guard let kind = GuestSpecification.Kind(rawValue: kind) else {
                    throw HostModelError(field: "kind", "builtin or kvm, got \(kind)")
                }
                return kind
            }, vcpus: vcpus, memoryBytes: try size("--memory", memory),
            disks: try disk.enumerated().map { try Self.disk($1, index: $0) }, mac: mac, ipv4: ipv4,
            workload: workload, seed: seed)
        do { return Array(try JSONEncoder().encode(specification)) } catch {
            throw CommandError.configuration("cannot encode the specification: \(error)")
        }
    }

    private func checked<T>(_ option: String, _ body: () throws(HostModelError) -> T) throws -> T {
        do { return try body() } catch { throw ValidationError("\(option): \(error.message)") }
    }

    private func size(_ option: String, _ text: String) throws -> Int {
        do { return try parseByteSize(text) } catch { throw ValidationError("\(option) \(text): \(error.message)") }
    }

    /// `SIZE`, `NAME:SIZE` or `NAME:SIZE:PATH`.
    static func disk(_ text: String, index: Int) throws -> DiskSpecification {
        let parts = text.split(separator: ":", maxSplits: 2).map(String.init)
        let name = parts.count >= 2 ? parts[0] : (index == 0 ? "root" : "disk\(index)")
        let sizeText = parts.count >= 2 ? parts[1] : parts.first ?? ""
        let bytes: Int
        do { bytes = try parseByteSize(sizeText) } catch {
            throw ValidationError("--disk \(text): \(error.message)")
        }
        return DiskSpecification(name: name, sizeBytes: bytes, path: parts.count == 3 ? parts[2] : nil)
    }
}
