import FerryTestSupport
import FerryTransport
import Foundation
import Logging
import Testing

@testable import FerryAgent

/// docs/agent-api.yaml and the routes the agent registers agree: every registered route is in
/// the document and marked `x-ferry-available: true`, and every operation so marked is registered.
struct OpenAPIDocumentTests {
    static let path = OpenAPIOperations.document("agent-api.yaml", from: #filePath)

    static func operations() throws -> [String: Bool] { try OpenAPIOperations.read(path) }

    @Test func theDocumentListsTheIssuesAPI() throws {
        let operations = try Self.operations()
        for operation in [
            "GET /v1/guests", "POST /v1/guests", "GET /v1/guests/{name}", "DELETE /v1/guests/{name}",
            "POST /v1/guests/{name}/start", "POST /v1/guests/{name}/stop", "POST /v1/guests/{name}/suspend",
            "POST /v1/guests/{name}/resume", "POST /v1/guests/{name}/pace", "GET /v1/guests/{name}/console",
            "GET /v1/host", "POST /v1/migrations",
            "GET /v1/migrations/{id}", "DELETE /v1/migrations/{id}", "GET /v1/migrations/{id}/events", "GET /metrics",
        ] {
            #expect(operations[operation] != nil, "\(operation) is not in docs/agent-api.yaml")
        }
    }

    /// The routes of an agent built but not served: the router is the one `run` serves.
    @Test func registeredRoutesAndAvailableOperationsAreTheSame() throws {
        let scratch = Scratch()
        let configuration = AgentConfiguration(
            stateDirectory: scratch.file("state"), listen: Endpoint(host: "127.0.0.1", port: 0),
            key: SharedKey.random(), version: "test")
        let registered = Set(try Agent(configuration: configuration, logger: Logger(label: "test.agent")).routes)
        let operations = try Self.operations()
        let available = Set(operations.filter(\.value).keys)
        for route in registered.subtracting(available) {
            Issue.record("the agent serves \(route), which docs/agent-api.yaml does not list as available")
        }
        for operation in available.subtracting(registered) {
            Issue.record("docs/agent-api.yaml marks \(operation) available, but the agent does not serve it")
        }
        #expect(registered.contains("GET /v1/host"))
    }
}
