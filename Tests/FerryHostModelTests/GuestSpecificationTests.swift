import FerryHostModel
import Foundation
import Testing

@Suite struct GuestSpecificationTests {
    @Test(arguments: ["a", "web-1", "0db", String(repeating: "x", count: 63)])
    func acceptsNames(_ text: String) throws {
        #expect(try GuestName(text).value == text)
    }

    @Test(arguments: ["", "-web", "Web", "a/b", "a.b", "a b", String(repeating: "x", count: 64)])
    func refusesNames(_ text: String) {
        #expect(throws: HostModelError.self) { try GuestName(text) }
    }

    @Test func validSpecificationPasses() throws {
        let spec = GuestSpecification(
            name: try GuestName("web"), kind: .kvm, vcpus: 2, memoryBytes: 256 << 20,
            disks: [DiskSpecification(name: "root", sizeBytes: 1 << 30)], mac: "02:00:00:00:00:01",
            ipv4: "10.0.0.5", cpuLimitPercent: 150)
        try spec.validate()
    }

    @Test func errorsNameTheField() throws {
        let base = GuestSpecification(name: try GuestName("web"), kind: .builtin, memoryBytes: 64 << 20)
        func field(_ change: (inout GuestSpecification) -> Void) -> String? {
            var spec = base
            change(&spec)
            do {
                try spec.validate()
                return nil
            } catch { return error.field }
        }
        #expect(field { $0.vcpus = 0 } == "vcpus")
        #expect(field { $0.memoryBytes = 1000 } == "memory_bytes")
        #expect(field { $0.mac = "03:00:00:00:00:01" } == "mac")
        #expect(field { $0.mac = "02:00:00:00:01" } == "mac")
        #expect(field { $0.ipv4 = "10.0.0.256" } == "ipv4")
        #expect(field { $0.cpuLimitPercent = 101 } == "cpu_limit_percent")
        #expect(field { $0.disks = [DiskSpecification(name: "d", sizeBytes: 100)] } == "disks[0].size_bytes")
        #expect(field { $0.disks = [DiskSpecification(name: "d", sizeBytes: 1 << 20, path: "rel")] } == "disks[0].path")
        #expect(
            field {
                $0.disks = [
                    DiskSpecification(name: "d", sizeBytes: 1 << 20), DiskSpecification(name: "d", sizeBytes: 1 << 20),
                ]
            } == "disks[1].name")
    }

    @Test func jsonUsesSnakeCaseAndChecksNames() throws {
        let spec = GuestSpecification(
            name: try GuestName("db"), kind: .builtin, memoryBytes: 64 << 20,
            disks: [DiskSpecification(name: "data", sizeBytes: 1 << 20)], networkID: "net0")
        let json = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
        #expect(json.contains("\"memory_bytes\":67108864"))
        #expect(json.contains("\"size_bytes\":1048576"))
        #expect(json.contains("\"network_id\":\"net0\""))
        #expect(try JSONDecoder().decode(GuestSpecification.self, from: Data(json.utf8)) == spec)
        let bad = json.replacingOccurrences(of: "\"db\"", with: "\"../db\"")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(GuestSpecification.self, from: Data(bad.utf8)) }
    }

    /// A specification without `disks` has none (the API and `ferry vmm --spec` took `[]` only);
    /// a missing required field is still refused, named by its key.
    @Test func disksMayBeLeftOut() throws {
        let json = #"{"name":"g1","kind":"builtin","vcpus":1,"memory_bytes":67108864,"seed":3}"#
        let spec = try JSONDecoder().decode(GuestSpecification.self, from: Data(json.utf8))
        #expect(spec.disks.isEmpty)
        #expect(spec.seed == 3)
        let noSeed = #"{"name":"g1","kind":"builtin","vcpus":1,"memory_bytes":67108864}"#
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(GuestSpecification.self, from: Data(noSeed.utf8))
        }
    }

    @Test func randomIDsAreWellFormedAndDistinct() throws {
        let ids = (0..<100).map { _ in GuestID.random() }
        #expect(Set(ids).count == 100)
        for id in ids { #expect(try GuestID(id.hex) == id) }
        #expect(throws: HostModelError.self) { try GuestID("ABC") }
    }
}
