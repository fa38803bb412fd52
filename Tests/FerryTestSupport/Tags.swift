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
