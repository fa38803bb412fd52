import FerryGuest
import FerryGuestMigration
import FerryKVM
import FerryKVMMigration

/// A running guest's demand: the pace `set-pace` gives it, and the load its vCPUs report.
extension RunningGuest {
    /// How fast a guest writes: bytes of page writes per second for the whole guest, or unpaced.
    enum Pace: Equatable, CustomStringConvertible {
        case unpaced
        case bytesPerSecond(Double)

        /// `unpaced`, or a rate as the workloads write it (`8MB/s`, `1GiB/s`, `2000pages/s`).
        static func parse(_ text: String) throws(ControlFailure) -> Pace {
            if text == "unpaced" { return .unpaced }
            do {
                let rate = try Rate.parse(text)
                return .bytesPerSecond(rate.bytesPerSecond(pageSize: KVMGuestLayout.pageSize))
            } catch {
                throw ControlFailure(
                    .badRequest, field: "rate", "\(error.message); or \"unpaced\" for as fast as the vCPUs go")
            }
        }

        var description: String {
            switch self {
            case .unpaced: "unpaced"
            case .bytesPerSecond(let rate): Rate(bytesPerSecond: rate).description
            }
        }
    }

    /// Each vCPU's load over its last interval (per mille, as the guest measured it), nil for
    /// a vCPU that has not reported yet.
    var loadPermillePerVCPU: [Int?] {
        if let builtin = migratable as? BuiltinMigratableGuest { return builtin.guest.loadPermillePerVCPU }
        if let kvm = migratable as? KVMMigratableGuest { return kvm.guest.loadPermillePerVCPU }
        return []
    }

    /// Changes the running guest's pacing at once. The built-in guest's page writes are of its
    /// page size (the rate in bytes is converted to its pages); an `idle` or `trace` workload
    /// has no rate to change.
    func setPace(_ pace: Pace) throws(ControlFailure) {
        if let builtin = migratable as? BuiltinMigratableGuest {
            let guest = builtin.guest
            guard guest.configuration.workload.rate != nil else {
                throw ControlFailure(
                    .wrongState, "the guest's workload \(guest.configuration.workload) has no rate to change")
            }
            switch pace {
            case .unpaced: guest.pace = .unpaced
            case .bytesPerSecond(let rate):
                guest.pace = .pagesPerSecond(rate / Double(guest.configuration.pageSize))
            }
        } else if let kvm = migratable as? KVMMigratableGuest {
            switch pace {
            case .unpaced: kvm.guest.writesPerSecond = nil
            case .bytesPerSecond(let rate): kvm.guest.writesPerSecond = rate / Double(KVMGuestLayout.pageSize)
            }
        } else {
            throw ControlFailure(.wrongState, "this kind of guest cannot change its pace")
        }
    }
}

extension VirtualMachineMonitor {
    /// `set-pace`: `rate` (`8MB/s`, …, or `unpaced`) becomes the running guest's pace at once.
    func setPace(_ request: ControlRequest) throws(ControlFailure) -> JSONValue {
        guard let text = try request.string("rate") else {
            throw ControlFailure(.badRequest, field: "rate", "missing: a rate such as \"8MB/s\", or \"unpaced\"")
        }
        let pace = try RunningGuest.Pace.parse(text)
        if case .bytesPerSecond(let rate) = pace, !(rate >= 1 && rate <= Rate.maximumBytesPerSecond) {
            throw ControlFailure(.badRequest, field: "rate", "\(text): at least 1 B/s and at most 1PB/s")
        }
        try runningGuest().setPace(pace)
        console.append("ferry vmm: pace \(pace)")
        return ["rate": .string(pace.description)]
    }

    /// `guest_load_permille` (per vCPU; null before a vCPU's first report) and `load_permille`
    /// (the mean of those reported; null when none has).
    static func loadFields(_ loads: [Int?]) -> [String: JSONValue] {
        let reported = loads.compactMap { $0 }
        return [
            "guest_load_permille": .array(loads.map { $0.map { JSONValue($0) } ?? .null }),
            "load_permille": reported.isEmpty ? .null : JSONValue(reported.reduce(0, +) / reported.count),
        ]
    }
}
