import FerryHostModel
import Foundation

/// A request body the agent can check beyond its JSON shape (ranges, names, formats).
public protocol ValidatedRequestBody: Decodable {
    /// Throws a `HostModelError` naming the first field out of range, as the API spells it.
    func validate() throws(HostModelError)
}

extension GuestSpecification: ValidatedRequestBody {}

/// Turns a request body into a value, or into the 4xx that names what is wrong with it:
/// 400 `malformed_body` when it is not JSON or not an object, 422 `invalid_field` with `field` set
/// when one field is missing, null, of the wrong type or out of range (`disks[0].size_bytes`).
public enum RequestBodyDecoding {
    public static func decode<Value: Decodable>(_ type: Value.Type, from body: some Collection<UInt8>)
        throws(AgentAPIError) -> Value
    {
        guard !body.isEmpty else {
            throw AgentAPIError(.badRequest, .malformedBody, "the body is empty; this request takes a JSON object")
        }
        do {
            return try JSONDecoder().decode(Value.self, from: Data(body))
        } catch let error as DecodingError {
            throw describe(error)
        } catch {
            throw AgentAPIError(.badRequest, .malformedBody, "the body cannot be read as JSON: \(error)")
        }
    }

    /// Decodes, then validates (`ValidatedRequestBody.validate`).
    public static func decodeValidated<Value: ValidatedRequestBody>(
        _ type: Value.Type, from body: some Collection<UInt8>
    ) throws(AgentAPIError) -> Value {
        let value = try decode(Value.self, from: body)
        do {
            try value.validate()
        } catch {
            throw AgentAPIError(
                .unprocessableContent, .invalidField, "\(error.field): \(error.message)", field: error.field)
        }
        return value
    }

    /// The 4xx for a decoder's complaint, naming the field by its path in the body.
    static func describe(_ error: DecodingError) -> AgentAPIError {
        func invalid(_ path: [any CodingKey], _ message: String) -> AgentAPIError {
            let field = fieldPath(path)
            return AgentAPIError(.unprocessableContent, .invalidField, "\(field): \(message)", field: field)
        }
        switch error {
        case .keyNotFound(let key, let context):
            return invalid(context.codingPath + [key], "required, but missing")
        case .valueNotFound(_, let context):
            return invalid(context.codingPath, "must not be null")
        case .typeMismatch(let type, let context):
            if context.codingPath.isEmpty {
                return AgentAPIError(
                    .badRequest, .malformedBody, "the body is JSON but not the object this request takes")
            }
            return invalid(context.codingPath, "expected \(typeName(type))")
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                let cause = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
                return AgentAPIError(
                    .badRequest, .malformedBody, "the body is not valid JSON" + (cause.map { ": \($0)" } ?? ""))
            }
            return invalid(context.codingPath, context.debugDescription)
        @unknown default:
            return AgentAPIError(.badRequest, .malformedBody, "the body cannot be decoded: \(error)")
        }
    }

    /// `disks[0].size_bytes` for the path disks → 0 → size_bytes.
    static func fieldPath(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text.isEmpty ? "(body)" : text
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type, is Int64.Type, is UInt64.Type, is Int32.Type, is UInt32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is [Any].Type: return "an array"
        default: return "a value of type \(type)"
        }
    }
}
