import Foundation

/// The operations of an OpenAPI document in this repository's layout (docs/*-api.yaml): path
/// keys indented two spaces under `paths:`, method keys four, and an operation's
/// `x-ferry-available: true` line, if it has one. "GET /v1/host" → whether it is marked available.
public enum OpenAPIOperations {
    public static func read(_ path: String) throws -> [String: Bool] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var operations: [String: Bool] = [:]
        var inPaths = false
        var path = ""
        var current: String?
        let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options"]
        for line in text.split(separator: "\n") {
            if !line.hasPrefix(" ") {
                inPaths = line == "paths:"
                continue
            }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"),
                methods.contains(String(line.dropFirst(4).dropLast()))
            {
                let operation = "\(line.dropFirst(4).dropLast().uppercased()) \(path)"
                operations[operation] = false
                current = operation
            } else if let current, line.trimmingCharacters(in: .whitespaces) == "x-ferry-available: true" {
                operations[current] = true
            }
        }
        return operations
    }

    /// `docs/NAME` from a test file's `#filePath` (two directories up).
    public static func document(_ name: String, from filePath: String) -> String {
        URL(fileURLWithPath: filePath).deletingLastPathComponent()
            .appendingPathComponent("../../docs/\(name)").standardized.path
    }
}
