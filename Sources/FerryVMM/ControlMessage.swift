/// The control protocol's version, answered by `hello` (docs/vmm-control.md).
public enum ControlProtocol {
    public static let version = 1
    /// The longest request line a `ferry vmm` reads; a longer one is refused and its connection closed.
    public static let maxRequestBytes = 64 << 10
}

/// One request line: `{"id": …, "op": "…", …arguments}`. The accessors throw a `ControlFailure`
/// that names the field.
public struct ControlRequest: Sendable {
    /// The client's `id` (a number or a string), echoed in the response; `.null` when absent.
    public let id: JSONValue
    public let op: String
    let fields: [String: JSONValue]

    public init(line: String) throws(ControlFailure) {
        let value: JSONValue
        do { value = try JSONValue.parse(line) } catch {
            throw ControlFailure(.badRequest, field: nil, "the request is not JSON; send one JSON object per line")
        }
        guard case .object(let fields) = value else {
            throw ControlFailure(.badRequest, field: nil, "a request is a JSON object, one per line")
        }
        switch fields["id"] {
        case nil, .null, .number, .string: id = fields["id"] ?? .null
        default: throw ControlFailure(.badRequest, field: "id", "id is a number or a string")
        }
        guard let op = fields["op"] else {
            throw ControlFailure(.badRequest, field: "op", "missing: name an operation")
        }
        guard case .string(let text) = op else { throw ControlFailure(.badRequest, field: "op", "op is a string") }
        self.op = text
        self.fields = fields
    }

    public func string(_ field: String) throws(ControlFailure) -> String? {
        switch fields[field] {
        case nil, .null: return nil
        case .string(let text): return text
        default: throw ControlFailure(.badRequest, field: field, "\(field) is a string")
        }
    }

    /// A number in `range` (integers only when `integer`), or nil when absent.
    public func number(_ field: String, in range: ClosedRange<Double>, integer: Bool = false) throws(ControlFailure)
        -> Double?
    {
        switch fields[field] {
        case nil, .null: return nil
        case .number(let value) where range.contains(value) && (!integer || value.rounded() == value): return value
        default:
            throw ControlFailure(
                .badRequest, field: field,
                "\(field) is \(integer ? "an integer" : "a number") from \(JSONValue.number(range.lowerBound).line) to \(JSONValue.number(range.upperBound).line)"
            )
        }
    }

    public func bool(_ field: String) throws(ControlFailure) -> Bool? {
        switch fields[field] {
        case nil, .null: return nil
        case .bool(let value): return value
        default: throw ControlFailure(.badRequest, field: field, "\(field) is true or false")
        }
    }
}

/// An error answer: `{"id": …, "ok": false, "error": {"code", "field"?, "message"}}`.
public struct ControlFailure: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// Malformed: not JSON, a missing or mistyped field (`field` names it), an unknown op.
        case badRequest = "bad_request"
        /// The line exceeded `ControlProtocol.maxRequestBytes`.
        case tooLarge = "too_large"
        /// Not possible in the guest's present state (the message names it).
        case wrongState = "wrong_state"
        /// The operation was tried and failed.
        case failed
        /// `cancel-migration` after the migration's last point of cancel (COMMIT is written).
        case tooLate = "too_late"
    }

    public var code: Code
    public var field: String?
    public var message: String

    public init(_ code: Code, field: String? = nil, _ message: String) {
        self.code = code
        self.field = field
        self.message = message
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }

    /// The response line for request `id`.
    func response(id: JSONValue) -> String {
        var error: [String: JSONValue] = ["code": .string(code.rawValue), "message": .string(message)]
        if let field { error["field"] = .string(field) }
        return JSONValue.object(["id": id, "ok": false, "error": .object(error)]).line
    }
}

/// A success line for request `id`.
func successLine(id: JSONValue, _ result: JSONValue) -> String {
    JSONValue.object(["id": id, "ok": true, "result": result]).line
}
