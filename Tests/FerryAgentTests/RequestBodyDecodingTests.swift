import FerryHostModel
import Testing

@testable import FerryAgent

/// A malformed body gets a 400, a bad field a 422 naming the field as the API spells it.
struct RequestBodyDecodingTests {
    func failure(_ body: String) -> AgentAPIError? {
        do throws(AgentAPIError) {
            _ = try RequestBodyDecoding.decodeValidated(GuestSpecification.self, from: Array(body.utf8))
            return nil
        } catch {
            return error
        }
    }

    static let valid = #"{"name":"web-1","kind":"builtin","vcpus":2,"memory_bytes":67108864,"disks":[],"seed":7}"#

    @Test func aValidSpecificationDecodes() throws {
        let spec = try RequestBodyDecoding.decodeValidated(GuestSpecification.self, from: Array(Self.valid.utf8))
        #expect(spec.name.value == "web-1")
        #expect(spec.memoryBytes == 64 << 20)
    }

    @Test(arguments: ["", "{", "not json", "[1,2]", "42"])
    func notTheObjectIsA400(body: String) {
        let error = failure(body)
        #expect(error?.status == .badRequest)
        #expect(error?.code == .malformedBody)
        #expect(error?.field == nil)
    }

    @Test(arguments: [
        (#"{"kind":"builtin","vcpus":2,"memory_bytes":67108864,"disks":[],"seed":7}"#, "name", "missing"),
        (
            #"{"name":"web-1","kind":"builtin","vcpus":"two","memory_bytes":67108864,"disks":[],"seed":7}"#, "vcpus",
            "an integer"
        ),
        (
            #"{"name":"web-1","kind":"builtin","vcpus":2,"memory_bytes":null,"disks":[],"seed":7}"#, "memory_bytes",
            "null"
        ),
        (#"{"name":"Web_1","kind":"builtin","vcpus":2,"memory_bytes":67108864,"disks":[],"seed":7}"#, "name", "a-z"),
        (#"{"name":"web-1","kind":"xen","vcpus":2,"memory_bytes":67108864,"disks":[],"seed":7}"#, "kind", "xen"),
        (
            #"{"name":"web-1","kind":"builtin","vcpus":2,"memory_bytes":67108864,"disks":[{"name":"root","size_bytes":"big"}],"seed":7}"#,
            "disks[0].size_bytes", "an integer"
        ),
        (
            #"{"name":"web-1","kind":"builtin","vcpus":2,"memory_bytes":1000,"disks":[],"seed":7}"#, "memory_bytes",
            "multiple of 4096"
        ),
        (
            #"{"name":"web-1","kind":"builtin","vcpus":2,"memory_bytes":67108864,"disks":[{"name":"root","size_bytes":1000}],"seed":7}"#,
            "disks[0].size_bytes", "multiple of 512"
        ),
        (
            #"{"name":"web-1","kind":"builtin","vcpus":99,"memory_bytes":67108864,"disks":[],"seed":7}"#, "vcpus",
            "1 to 64"
        ),
    ])
    func aBadFieldIsA422NamingIt(body: String, field: String, says: String) {
        let error = failure(body)
        #expect(error?.status == .unprocessableContent)
        #expect(error?.code == .invalidField)
        #expect(error?.field == field)
        #expect(error?.message.hasPrefix(field) == true)
        #expect(error?.message.contains(says) == true, "\(error?.message ?? "")")
    }

    @Test func theErrorBodyIsTheAPIsFormat() throws {
        let error = try #require(
            failure(#"{"name":"web-1","kind":"builtin","vcpus":0,"memory_bytes":67108864,"disks":[],"seed":7}"#))
        let text = String(decoding: error.bodyBytes, as: UTF8.self)
        #expect(text.hasPrefix(#"{"error":{"code":"invalid_field","field":"vcpus","message":"vcpus: "#))
    }
}
