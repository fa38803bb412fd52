import FerryControl
import FerryController
import FerryTestSupport
import FerryTransport
import Foundation
import Logging
import Testing

/// docs/controller-api.yaml and the routes `ferry control` serves under /v1 and /healthz are the
/// same set (the console's HTML pages are not part of the JSON API).
struct ControllerAPIDocumentTests {
    @Test func theDocumentListsExactlyTheServedRoutes() async throws {
        let scratch = Scratch()
        let store = try SQLiteControlStore(path: scratch.file("control.sqlite"), logger: quietLogger)
        let controller = try Controller(
            configuration: ControllerConfiguration(
                key: SharedKey.random(),
                passwordHashParameters: ScryptParameters(logN: 10, blockSize: 8, parallelism: 1)),
            store: store, logger: quietLogger)
        let served = Set(controller.routes.filter { $0.contains(" /v1/") || $0.hasSuffix(" /healthz") })
        let documented = Set(
            try OpenAPIOperations.read(OpenAPIOperations.document("controller-api.yaml", from: #filePath)).keys)
        for route in served.subtracting(documented) {
            Issue.record("ferry control serves \(route), which docs/controller-api.yaml does not list")
        }
        for operation in documented.subtracting(served) {
            Issue.record("docs/controller-api.yaml lists \(operation), which ferry control does not serve")
        }
        #expect(served.contains("POST /v1/projects/{project}/guests"), "\(served.sorted())")
    }
}
