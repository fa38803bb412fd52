import FerryTestSupport
import Foundation
import Testing

/// `ferry cloud` against a real `ferry control` and agent, as a user of project alpha: login keeps
/// an API token in a file of mode 0600; create waits until the guest runs; what the user may not
/// do (an invoice, a project not theirs, a migration between hosts) is refused with the
/// controller's reason and exit 1; after logout the token is revoked
/// and the commands say to log in (exit 3).
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct CloudCLITests {
    @Test func aUserLogsInCreatesStopsAndDeletesAGuest() throws {
        let cloud = try ControlPlaneFixture("ccli", agents: 1)
        let password = "correct horse battery staple"
        #expect(try cloud.json("POST", "/v1/users", ["name": "alice", "password": password]).0 == 201)
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/alice", ["role": "member"]).0 == 200)
        let passwordFile = cloud.scratch.file("password")
        try (password + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
        let config = cloud.scratch.file("home/cloud.json")
        let run = { (arguments: [String]) throws -> FerryProcess.Outcome in
            try FerryProcess.run(["cloud"] + arguments + ["--config", config], timeout: 60)
        }

        let wrong = cloud.scratch.file("wrong")
        try "not the password at all\n".write(toFile: wrong, atomically: true, encoding: .utf8)
        let refused = try run(["login", cloud.url, "--user", "alice", "--password-file", wrong])
        #expect(refused.status == 3 && refused.stderr.contains("wrong user name or password"), "\(refused.stderr)")

        let login = try run(["login", cloud.url, "--user", "alice", "--password-file", passwordFile])
        #expect(login.status == 0 && login.stdout.contains("logged in"), "\(login.stderr)")
        let mode = try FileManager.default.attributesOfItem(atPath: config)[.posixPermissions] as? Int
        #expect(mode == 0o600)

        let catalogue = try run(["catalogue"])
        #expect(
            catalogue.stdout.contains("tiny") && catalogue.stdout.contains("projects: alpha"), "\(catalogue.stdout)")
        let created = try run(["create", "web", "--project", "alpha", "--flavor", "tiny", "--image", "builtin"])
        #expect(created.status == 0 && created.stdout.contains("running on host h1"), "\(created.stderr)")
        let id = try #require(created.stdout.split(separator: " ").dropFirst().first.map(String.init))
        let listed = try run(["guests", "--project", "alpha"])
        #expect(listed.stdout.contains(id) && listed.stdout.contains("running"), "\(listed.stdout)")

        let invoice = try run(["invoice", "--project", "alpha"])
        #expect(invoice.status == 1 && invoice.stderr.contains("admin"), "a member's invoice: \(invoice.stderr)")
        let elsewhere = try run(["guests", "--project", "beta"])
        #expect(elsewhere.status == 1 && elsewhere.stderr.contains("no project beta"), "\(elsewhere.stderr)")

        let migrate = try run(["guest", "migrate", id, "--host", "h2", "--wait"])
        #expect(migrate.status == 1 && migrate.stderr.contains("needs a site admin"), "\(migrate.stderr)")
        let help = try FerryProcess.run(["cloud", "guest", "migrate", "--help"], timeout: 60).stdout
        #expect(help.contains("live migration") && help.contains("--host <host>") && help.contains("--wait"), "\(help)")
        #expect(try run(["guest", "stop", id]).stdout.contains("stopped"))
        #expect(try run(["guest", "delete", id]).stdout.contains("deleted"))
        let journal = try run(["guest", "journal", id]).stdout
        #expect(journal.contains("-> running") && journal.contains("-> deleted"), "\(journal)")

        #expect(try run(["logout"]).status == 0)
        let after = try run(["guests", "--project", "alpha"])
        #expect(after.status == 3 && after.stderr.contains("ferry cloud login"), "\(after.stderr)")
        let tokens = try cloud.json("GET", "/v1/projects/alpha/guests")
        #expect(tokens.0 == 200, "the operator still reads it")
    }

    /// `ferry cloud guest suspend` and `resume` with --wait: each change on standard error, the end
    /// on standard output; a refusal says the controller's reason and what to do instead; --json
    /// with --wait prints the guest as it ended, once.
    @Test func aUserSuspendsAndResumesAGuestAndWaits() throws {
        let cloud = try ControlPlaneFixture("ccls", agents: 1)
        let password = "correct horse battery staple"
        #expect(try cloud.json("POST", "/v1/users", ["name": "alice", "password": password]).0 == 201)
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/alice", ["role": "member"]).0 == 200)
        let passwordFile = cloud.scratch.file("password")
        try (password + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
        let config = cloud.scratch.file("home/cloud.json")
        let run = { (arguments: [String]) throws -> FerryProcess.Outcome in
            try FerryProcess.run(["cloud"] + arguments + ["--config", config], timeout: 60)
        }
        try #require(try run(["login", cloud.url, "--user", "alice", "--password-file", passwordFile]).status == 0)
        let created = try run(["create", "s", "--project", "alpha", "--flavor", "tiny", "--image", "builtin"])
        try #require(created.status == 0, "\(created.stderr)")
        let id = try #require(created.stdout.split(separator: " ").dropFirst().first.map(String.init))

        let suspended = try run(["guest", "suspend", id, "--wait"])
        #expect(suspended.status == 0, "\(suspended.stderr)")
        #expect(suspended.stdout.contains("guest \(id) suspended on host h1 after"), "\(suspended.stdout)")
        #expect(suspended.stderr.contains("guest \(id): suspended on host h1 ("), "progress: \(suspended.stderr)")
        #expect(try cloud.agents[0].view("c-\(id)").state == "suspended")
        let again = try run(["guest", "suspend", id])
        #expect(again.status == 1, "\(again.stderr)")
        #expect(
            again.stderr.contains("suspend takes a running guest") && again.stderr.contains("ferry cloud guest show"),
            "the reason and what to do: \(again.stderr)")

        let resumed = try run(["guest", "resume", id, "--wait"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("guest \(id): building on host h1 ("), "progress: \(resumed.stderr)")
        #expect(resumed.stderr.contains("guest \(id): running on host h1 ("), "progress: \(resumed.stderr)")
        #expect(resumed.stdout.contains("guest \(id) running on host h1 after"), "\(resumed.stdout)")
        #expect(try cloud.agents[0].view("c-\(id)").state == "running")
        let notSuspended = try run(["guest", "resume", id])
        #expect(notSuspended.status == 1, "\(notSuspended.stderr)")
        #expect(notSuspended.stderr.contains("ferry cloud guest start"), "\(notSuspended.stderr)")

        let json = try run(["guest", "suspend", id, "--wait", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(object?["state"] as? String == "suspended", "one JSON document, the guest as it ended: \(json.stdout)")
        let impatient = try run(["guest", "resume", id, "--wait", "--timeout", "0.001"])
        #expect(impatient.status == 1, "\(impatient.stdout) \(impatient.stderr)")
        #expect(
            impatient.stderr.contains("is still building on host h1") && impatient.stderr.contains("--timeout"),
            "where it got to, and how to wait longer: \(impatient.stderr)")
        #expect(try cloud.waitForGuest(id) { $0 != "building" }["state"] as? String == "running")
        #expect(try run(["guest", "suspend", id]).status == 0)
        let quick = try run(["guest", "resume", id])
        #expect(quick.status == 0 && quick.stdout.contains("  building  "), "without --wait: \(quick.stdout)")
        #expect(try cloud.waitForGuest(id) { $0 != "building" }["state"] as? String == "running")

        let badID = try run(["guest", "resume", "web"])
        #expect(badID.status != 0 && badID.stderr.contains("not a guest ID"), "\(badID.stderr)")
        let badTimeout = try run(["guest", "resume", id, "--wait", "--timeout", "0"])
        #expect(badTimeout.status != 0 && badTimeout.stderr.contains("--timeout"), "\(badTimeout.stderr)")
        for command in ["suspend", "resume"] {
            let help = try FerryProcess.run(["cloud", "guest", command, "--help"], timeout: 60).stdout
            #expect(help.contains("--wait") && help.contains("--timeout <seconds>"), "\(command): \(help)")
        }
    }
}
