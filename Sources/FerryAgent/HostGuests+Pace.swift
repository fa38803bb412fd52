import FerryHostModel
import FerryInventory
import FerryVMM

/// A running guest's demand and what it uses: `POST /v1/guests/{name}/pace` and the `usage` of
/// `GET /v1/guests/{name}`, both through the guest's vmm (docs/vmm-control.md: `set-pace`, `status`).
extension HostGuests {
    /// Changes the running guest's pace at once (the vmm's `set-pace`); returns the record.
    public func pace(_ name: GuestName, rate: String) throws(AgentAPIError) -> GuestRecord {
        let record = try require(name)
        guard record.state.hasProcess, let facts = record.process else {
            throw AgentAPIError(
                .conflict, .conflict,
                "guest \(name) is \(record.state.rawValue): its pace can change while its process runs; start it")
        }
        do throws(VMMError) {
            let client = try VMMControlClient(path: facts.controlSocket, timeoutSeconds: 10)
            defer { client.close() }
            try client.call("set-pace", ["rate": .string(rate)])
        } catch {
            if error.code == .refused && error.message.contains("wrong_state") {
                throw AgentAPIError(.conflict, .conflict, "guest \(name): \(error.message)")
            }
            if error.code == .refused {
                throw AgentAPIError(.unprocessableContent, .invalidField, "rate: \(error.message)", field: "rate")
            }
            throw GuestProcess.failed("guest \(name): its pace could not be set: \(error.message)")
        }
        return record
    }

    /// The guest's CPU use and reported load from its vmm's `status`; nil without a process or
    /// when it does not answer within `timeoutSeconds`.
    func usage(_ record: GuestRecord, timeoutSeconds: Double = 1) -> GuestUsage? {
        guard record.state.hasProcess, let facts = record.process,
            let client = try? VMMControlClient(path: facts.controlSocket, timeoutSeconds: timeoutSeconds)
        else { return nil }
        defer { client.close() }
        guard let status = try? client.call("status") else { return nil }
        return Self.usage(status)
    }

    /// `GuestUsage` from a vmm's `status` answer.
    static func usage(_ status: JSONValue) -> GuestUsage {
        func count(_ value: JSONValue?) -> UInt64 { UInt64(max(0, value?.doubleValue ?? 0)) }
        let loads = status["guest_load_permille"]?.arrayValue ?? []
        return GuestUsage(
            vcpuCPUNanoseconds: (status["vcpu_cpu_ns"]?.arrayValue ?? []).map { count($0) },
            cpuNanoseconds: count(status["cpu_ns"]), guestLoadPermille: loads.map { $0.intValue },
            loadPermille: status["load_permille"]?.intValue, totalSteps: count(status["total_steps"]))
    }
}
