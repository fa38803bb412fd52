import Foundation
import Testing

/// Tags for choosing what to run (docs/guide.md, "Testing").
extension Tag {
    /// Suites and tests that take more than about 5 s.
    @Tag public static var slow: Self
    /// Needs a usable /dev/kvm (`Requirement.kvm`).
    @Tag public static var kvm: Self
    /// Builds network namespaces (`Requirement.namespaces`: root and iproute2).
    @Tag public static var namespaces: Self
}

/// The tag filter that Swift Testing's command line lacks on Swift 6.3 (`swift test` offers
/// `--filter` and `--skip`, regular expressions over test names, and nothing for tags):
/// `FERRY_SKIP_TAGS=slow,kvm swift test` skips the suites and tests that carry
/// `.skippable(.slow)` or `.skippable(.kvm)`, each shown as skipped with the reason.
public enum TagFilter {
    /// The tags' names as `FERRY_SKIP_TAGS` spells them.
    static let names: [Tag: String] = [.slow: "slow", .kvm: "kvm", .namespaces: "namespaces"]

    /// The names in `FERRY_SKIP_TAGS` (comma- or space-separated).
    public static let skipped: Set<String> = Set(
        (ProcessInfo.processInfo.environment["FERRY_SKIP_TAGS"] ?? "")
            .split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init))

    public static func skips(_ tag: Tag) -> Bool { names[tag].map(skipped.contains) ?? false }
}

extension Trait where Self == ConditionTrait {
    /// Skipped when `FERRY_SKIP_TAGS` names `tag`; goes with `.tags(tag)`.
    public static func skippable(_ tag: Tag) -> Self {
        .enabled(
            if: !TagFilter.skips(tag), Comment(rawValue: "FERRY_SKIP_TAGS names \(TagFilter.names[tag] ?? "\(tag)")"))
    }
}
