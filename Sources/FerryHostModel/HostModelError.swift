/// A value of the host model that is out of range or malformed; `field` names it the way the
/// agent's API spells it (`memory_bytes`, `disks[0].size_bytes`), so a 4xx can point at it.
public struct HostModelError: Error, Sendable, Equatable, CustomStringConvertible {
    public let field: String
    public let message: String

    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}
