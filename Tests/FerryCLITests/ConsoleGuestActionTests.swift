import FerryTestSupport
import Foundation
import Testing

/// The guest page's suspend, resume and migrate forms on a real `ferry control` with two agents,
/// as a browser without JavaScript uses them: each shown only when the guest's state and the
/// user's role allow it, CSRF-checked, answered by a 303 to the page with a notice; a refused
/// action shows the API's reason on the page.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ConsoleGuestActionTests {
    static let password = "correct horse battery staple"

    @Test func aMemberSuspendsAndResumesAndOnlyASiteAdminIsOfferedAMove() throws {
        let cloud = try ControlPlaneFixture("cga", agents: 2)
        for user in ["alice", "root"] {
            let body: [String: Any] = ["name": user, "password": Self.password, "site_admin": user == "root"]
            #expect(try cloud.json("POST", "/v1/users", body).0 == 201)
        }
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/alice", ["role": "member"]).0 == 200)
        let body: [String: Any] = ["name": "web", "flavor": "tiny", "image": "builtin"]
        let id = try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String)
        let running = try cloud.waitForGuest(id) { ["running", "error"].contains($0) }
        try #require(running["state"] as? String == "running", "\(running)")
        let host = try #require(running["host"] as? String)
        let other = host == "h1" ? "h2" : "h1"

        let browser = ConsoleBrowser(http: CloudHTTP(base: cloud.url))
        let alice = try browser.logIn("alice", Self.password)
        let path = "/console/guests/\(id)"
        let page = try alice.get(path)
        let csrf = try #require(page.field("csrf_token"))
        #expect(page.body.contains("\(path)/suspend\"") && !page.body.contains("\(path)/resume\""), "\(page.body)")
        #expect(!page.body.contains("\(path)/migrate\""), "a member is not offered a move")

        #expect(try alice.post("\(path)/suspend", [:]).status == 403, "no CSRF token")
        #expect(try cloud.json("GET", "/v1/guests/\(id)").1["state"] as? String == "running")
        let suspended = try alice.post("\(path)/suspend", ["csrf_token": csrf])
        #expect(suspended.status == 303 && suspended.location == "\(path)?done=suspend", "\(suspended.status)")
        let after = try alice.get("\(path)?done=suspend").body
        #expect(after.contains(#"id="state">suspended<"#) && after.contains(#"class="notice""#), "\(after)")
        #expect(after.contains("Suspended: host \(host) saved it"), "the notice: \(after)")
        #expect(after.contains("\(path)/resume\"") && !after.contains("\(path)/suspend\""), "\(after)")
        #expect(try cloud.agents[Int(host.dropFirst())! - 1].view("c-\(id)").state == "suspended")

        // A second suspend (a stale page's form): refused, with the API's reason on the page.
        let refused = try alice.post("\(path)/suspend", ["csrf_token": csrf])
        #expect(refused.status == 409, "\(refused.status)")
        #expect(refused.body.contains(#"class="error""#) && refused.body.contains("suspend takes a running guest"))
        #expect(refused.body.contains(#"id="state">suspended<"#), "the page as the guest is now")
        #expect(!refused.body.contains(#"class="notice""#))
        let made = try alice.get("\(path)?done=%3Cb%3Ex%3C%2Fb%3E").body
        #expect(made.contains(#"id="state""#) && !made.contains(#"class="notice""#), "the notices are a fixed list")

        let resumed = try alice.post("\(path)/resume", ["csrf_token": csrf])
        #expect(resumed.status == 303 && resumed.location == "\(path)?done=resume", "\(resumed.status)")
        let back = try alice.waitFor(path) { $0.contains(#"id="state">running<"#) }
        #expect(back.contains("\(path)/suspend\""), "running again: suspend is offered")
        let journal = try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
        let causes = journal.compactMap { $0["cause"] as? String }
        #expect(causes.contains { $0.hasPrefix("console: suspend") }, "\(causes)")
        #expect(causes.contains { $0.hasPrefix("console: resume") }, "\(causes)")

        // A member's post to migrate: not allowed (403), the guest stays.
        let forbidden = try alice.post("\(path)/migrate", ["csrf_token": csrf, "host": other])
        #expect(forbidden.status == 403 && forbidden.body.contains("needs a site admin"), "\(forbidden.status)")
        // A site admin is offered the other host or any; a host that is not there is refused
        // with the API's reason.
        let root = try browser.logIn("root", Self.password)
        let adminPage = try root.get(path)
        let rootCSRF = try #require(adminPage.field("csrf_token"))
        #expect(adminPage.body.contains("\(path)/migrate\""), "\(adminPage.body)")
        #expect(adminPage.body.contains(#"<option value="\#(other)">"#), "the other host is offered")
        #expect(!adminPage.body.contains(#"<option value="\#(host)">"#), "its own host is not")
        #expect(adminPage.body.contains(#"<option value="">any host</option>"#))
        let nowhere = try root.post("\(path)/migrate", ["csrf_token": rootCSRF, "host": "h9"])
        #expect(nowhere.status >= 400 && nowhere.body.contains(#"class="error""#), "\(nowhere.status)")
        #expect(nowhere.body.contains("h9"), "the API's reason names the host: \(nowhere.body)")
        #expect(try cloud.json("GET", "/v1/guests/\(id)").1["host"] as? String == host)
        #expect(try cloud.json("GET", "/v1/guests/\(id)").1["moving_to"] == nil)
    }
}
