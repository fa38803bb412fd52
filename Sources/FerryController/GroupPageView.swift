import FerryControl
import Foundation

/// The console's page of one auto-scaling group: its settings, its members, its timeline as a
/// picture (`GroupChart`) and as a table (its actions, newest first).
struct GroupPageView {
    struct MemberRow {
        var id: String
        var name: String
        var state: String
        var host: String
    }
    struct ActionRow {
        var time: String
        var from: Int
        var to: Int
        var reason: String
    }

    var id: String
    var name: String
    var project: String
    var state: String
    var flavor: String
    var image: String
    var min: Int
    var max: Int
    var desired: Int
    /// Suspended members kept ready beyond the desired running ones.
    var warm: Int
    var scaleIn: String
    var policy: String
    var members: [MemberRow]
    var hasMembers: Bool
    /// Members that failed to build in a row and when the next may be made, if any did.
    var backoff: String?
    var actions: [ActionRow]
    /// The chart (`GroupChart`, SVG made here, not from user input), set by the page.
    var chart = ""
    /// The caller may set the desired count and delete the group (its project's admin).
    var canManage = false
    var csrfToken = ""

    /// Members not deleted; the actions newest first.
    /// With a back-off, the newest row of the actions is the failures and the next attempt.
    init(_ group: ScalingGroup, members: [CloudGuest], actions: [ScalingAction], backoff: BuildBackoff = .none) {
        id = group.id
        name = group.name
        project = group.project
        state = group.state.rawValue
        flavor = group.flavor
        image = group.image
        min = group.min
        max = group.max
        desired = group.desired
        warm = group.warm
        scaleIn = group.scaleIn.rawValue
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        policy = (try? encoder.encode(group.policy)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        self.members = members.filter { $0.state != .deleted }.map {
            MemberRow(id: $0.id.hex, name: $0.name.value, state: $0.state.rawValue, host: $0.host)
        }
        hasMembers = !self.members.isEmpty
        self.actions = actions.reversed().map {
            ActionRow(time: CloudViews.time($0.time), from: $0.from, to: $0.to, reason: $0.reason)
        }
        if let last = backoff.lastFailureMilliseconds, let next = backoff.nextAttemptMilliseconds {
            let text =
                "\(backoff.failuresInARow) member builds failed in a row; the next member not before "
                + CloudViews.time(milliseconds: next)
            self.backoff = text
            self.actions.insert(
                ActionRow(
                    time: CloudViews.time(milliseconds: last), from: group.desired, to: group.desired,
                    reason: "back-off: " + text),
                at: 0)
        }
    }
}

/// A group in the project page's list.
struct GroupRow {
    var id: String
    var name: String
    var desired: Int
    var bounds: String
    var state: String

    init(_ group: ScalingGroup) {
        id = group.id
        name = group.name
        desired = group.desired
        bounds = "\(group.min)–\(group.max)"
        state = group.state.rawValue
    }
}
