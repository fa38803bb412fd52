import FerryAgent
import FerryHostModel
import Foundation
import Testing

/// The agent-to-agent types as JSON, the resolution of an unresolved handoff, and the event log.
struct MigrationExchangeTests {
    @Test("the exchange's bodies use the API's snake_case names and round-trip")
    func exchangeJSON() throws {
        let spec = GuestSpecification(name: try GuestName("web-1"), kind: .builtin, vcpus: 2, memoryBytes: 64 << 20)
        let request = IncomingMigrationRequest(
            migrationID: "m1", guestID: .random(), specification: spec, paused: true,
            sourceAgent: "http://10.0.0.1:7460")
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let text = String(decoding: try encoder.encode(request), as: UTF8.self)
        for key in ["\"migration_id\"", "\"guest_id\"", "\"specification\"", "\"paused\"", "\"source_agent\""] {
            #expect(text.contains(key), "\(key) missing in \(text)")
        }
        #expect(try JSONDecoder().decode(IncomingMigrationRequest.self, from: Data(text.utf8)) == request)
        let status = IncomingMigrationStatus(migrationID: "m1", guestID: request.guestID, state: .failed, exitStatus: 1)
        let decoded = try JSONDecoder().decode(IncomingMigrationStatus.self, from: try JSONEncoder().encode(status))
        #expect(decoded == status)
    }

    @Test(
        "an unresolved handoff is resolved only by a destination that knows",
        arguments: [
            (IncomingMigrationStatus.State.arrived, "destination" as String?), (.failed, "source"),
            (.abandoned, "source"),
            (.waiting, nil), (.receiving, nil),
        ])
    func resolution(state: IncomingMigrationStatus.State, expected: String?) {
        #expect(IncomingMigrationStatus(migrationID: "m", guestID: .random(), state: state).resolution == expected)
    }

    @Test("an event survives text/event-stream with multi-line data; the resource round-trips; four final statuses")
    func eventLog() throws {
        let event = MigrationEvent(id: 7, name: .round, data: "{\"a\":1}\n{\"b\":2}")
        var parser = ServerSentEventParser()
        let parsed = event.eventStreamText.split(separator: "\n", omittingEmptySubsequences: false).compactMap {
            parser.take(line: String($0)).flatMap(MigrationEvent.init)
        }
        #expect(parsed == [event])
        let resource = MigrationResource(id: "m", guest: "g", direction: .out, peer: nil, destination: "h:1")
        #expect(try MigrationResource.decode(resource.json).id == "m")
        #expect(MigrationResource.Status.allCases.filter(\.isFinal) == [.completed, .failed, .cancelled, .unresolved])
    }
}
