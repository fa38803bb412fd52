import FerryTestSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// `ferry control --database postgres://…`: two controllers on one PostgreSQL database, three
/// agents reporting to the first. Creates sent to both at once fill the hosts' capacity exactly:
/// the database serialises the two controllers' writes, so no capacity is placed twice.
@Suite(
    .serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(
        if: ProcessInfo.processInfo.environment["FERRY_TEST_POSTGRES"] != nil,
        "FERRY_TEST_POSTGRES is not set: run the tests as `Tools/postgres-test-server run swift test` (the README's command)"
    ))
struct ControlPlanePostgresTests {
    @Test func twoControllersOnOneDatabaseFillTheHostsExactly() throws {
        let database = try Self.createDatabase()
        // Three hosts with room for two `tiny` guests each (2 vCPUs).
        let cloud = try ControlPlaneFixture("cpg", database: database, offerVCPUs: 2)
        let (second, secondURL) = try cloud.launchController()
        defer { kill(second.process.processIdentifier, SIGKILL) }
        let clients = [try cloud.client(), try cloud.client(secondURL)]
        let answers = Mutex<[(status: Int, body: String)]>([])
        DispatchQueue.concurrentPerform(iterations: 12) { index in
            let body = #"{"name":"g\#(index)","flavor":"tiny","image":"builtin"}"#
            let response = try? clients[index % 2].send("POST", "/v1/projects/alpha/guests", body: Array(body.utf8))
            answers.withLock {
                $0.append((response?.status ?? 0, response.map { String(decoding: $0.body, as: UTF8.self) } ?? ""))
            }
        }
        let all = answers.withLock { $0 }
        let created = all.filter { $0.status == 202 }.compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.body.utf8)) as? [String: Any])?["id"] as? String
        }
        let refused = all.filter { $0.status == 409 && $0.body.contains("insufficient_capacity") }
        #expect(created.count == 6 && refused.count == 6, "\(all)")
        for id in created {
            let view = try cloud.waitForGuest(id) { $0 == "running" || $0 == "error" }
            #expect(view["state"] as? String == "running", "\(view)")
        }
        let perHost = try cloud.agents.map { try $0.list().count }
        #expect(perHost == [2, 2, 2], "each host holds exactly what it offered")
        // Both controllers answer from the one database.
        let listed = try cloud.json("GET", "/v1/projects/alpha/guests", at: secondURL).1["guests"] as? [[String: Any]]
        #expect(Set(listed?.compactMap { $0["id"] as? String } ?? []) == Set(created))
    }

    /// A fresh database on the test server (psql, from Debian's postgresql-client), as a URL.
    static func createDatabase() throws -> String {
        let server = try #require(ProcessInfo.processInfo.environment["FERRY_TEST_POSTGRES"])
        let name = "ferry_cli_" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let psql = Process()
        psql.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
        psql.arguments = [server, "-q", "-c", "CREATE DATABASE \(name)"]
        try psql.run()
        psql.waitUntilExit()
        try #require(psql.terminationStatus == 0, "psql could not create a database on \(server)")
        let path = try #require(server.range(of: "/postgres"))
        return server.replacingCharacters(in: path, with: "/\(name)")
    }
}
