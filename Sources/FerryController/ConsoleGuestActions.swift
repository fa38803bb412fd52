import FerryControl
import Foundation
import Hummingbird

/// The console's forms on a guest's page: stop, start, suspend, resume, delete and (a site
/// admin's) migrate, each the API's own action. Done, it answers 303 to the guest's page with
/// `?done=ACTION` (its notice); refused for the guest's state or by its host, the page again
/// with the API's reason and status; not allowed, the error page (403, or 404 for another
/// project's guest).
extension ConsoleRoutes {
    func addGuestActions(to router: RouterGroup<ControllerContext>) {
        router.post("guests/:id/stop") { _, context in
            try await act(context, .stopGuest, "stop") { _ = try await provisioner.stop($0) }
        }
        router.post("guests/:id/start") { _, context in
            try await act(context, .startGuest, "start") { _ = try await provisioner.start($0) }
        }
        router.post("guests/:id/suspend") { _, context in
            try await act(context, .stopGuest, "suspend") {
                _ = try await provisioner.suspend($0, cause: "console: suspend")
            }
        }
        router.post("guests/:id/resume") { _, context in
            try await act(context, .startGuest, "resume") {
                _ = try await provisioner.resumeSuspended($0, cause: "console: resume")
            }
        }
        router.post("guests/:id/migrate") { request, context in
            let form = FormFields(String(buffer: try await request.body.collect(upTo: .max)))
            let host = form["host"].flatMap { $0.isEmpty || $0 == "any" ? nil : $0 }
            return try await act(context, .readGuest, "migrate", site: .migrateGuests) { guest in
                let moving = try await mover.begin(guest.id, to: host, cause: "console: migrate")
                Task { [mover] in _ = try? await mover.carryOut(moving) }  // it logs how it ended
            }
        }
        router.post("guests/:id/delete") { _, context in
            let guest = try await guest(context, .deleteGuest)
            do { _ = try await provisioner.delete(guest) } catch {
                return try await refused(guest, context, error)
            }
            return ConsoleHTML.redirect("/console/projects/\(guest.project)")
        }
    }

    /// `body` on the guest if the caller may do `action` (and `site`, if given) to it; the
    /// guest's page with the notice of `done`, or with the reason it was refused.
    private func act(
        _ context: ControllerContext, _ action: ProjectAction, _ done: String, site: SiteAction? = nil,
        _ body: (CloudGuest) async throws -> Void
    ) async throws -> Response {
        let guest = try await guest(context, action)
        if let site { try context.require(site) }
        do { try await body(guest) } catch { return try await refused(guest, context, error) }
        return ConsoleHTML.redirect("/console/guests/\(guest.id.hex)?done=\(done)")
    }

    /// The guest's page as it is now, with the API's reason for refusing `error`.
    private func refused(_ guest: CloudGuest, _ context: ControllerContext, _ error: any Error) async throws
        -> Response
    {
        let answer = CloudAPIError.from(error)
        let now = try await store.guest(id: guest.id) ?? guest
        return try await guestPage(now, try ConsoleSession(context), error: answer)
    }
}
