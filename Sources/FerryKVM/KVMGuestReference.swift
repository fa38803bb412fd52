/// What a KVM guest that never migrated prints and computes: every vCPU's walk (`KVMGuestWalk`)
/// run to the step limit on a fresh copy of the guest's original memory. Each vCPU owns its own
/// bytes of every page (`vcpu * 64 …`), so walking the vCPUs one after the other on one memory
/// gives what the vCPUs running side by side give.
public struct KVMGuestReference: Sendable {
    /// Per vCPU, the lines the guest prints: step 0, every `printInterval` steps, and the final
    /// `done` line.
    public let lines: [[String]]
    /// Per vCPU, the checksum after the last step.
    public let checksums: [UInt64]

    /// Runs the walks on `memory` (`memorySize` bytes; its working area is rewritten as the guest
    /// would). The parameters need a step limit.
    public init(parameters: KVMGuestParameters, memory: UnsafeMutableRawPointer, memorySize: Int) {
        guard let steps = parameters.stepLimit else { preconditionFailure("KVMGuestReference needs a step limit") }
        var lines: [[String]] = []
        var checksums: [UInt64] = []
        for vcpu in 0..<parameters.vcpus {
            var walk = KVMGuestWalk(seed: parameters.seed, vcpu: vcpu, memorySize: memorySize)
            var printed = [KVMGuestWalk.line(vcpu: vcpu, step: 0, checksum: 0)]
            walk.run(steps: steps, memory: memory, printInterval: parameters.printInterval) { step, checksum in
                printed.append(KVMGuestWalk.line(vcpu: vcpu, step: step, checksum: checksum))
            }
            printed.append(KVMGuestWalk.line(vcpu: vcpu, step: walk.step, checksum: walk.checksum, done: true))
            lines.append(printed)
            checksums.append(walk.checksum)
        }
        self.lines = lines
        self.checksums = checksums
    }

    /// nil when the lines printed before the migration (`before`, by the source's VM) followed by
    /// those printed after it (`after`, by the destination's) are exactly this reference's lines,
    /// per vCPU: none lost, none repeated, every checksum equal. Otherwise the first problem,
    /// named by vCPU and step.
    public func continuityProblem(before: [KVMConsoleLine], after: [KVMConsoleLine]) -> String? {
        for (vcpu, expected) in lines.enumerated() {
            let first = before.filter { $0.vcpu == vcpu }.map(\.text)
            let second = after.filter { $0.vcpu == vcpu }.map(\.text)
            let got = first + second
            if got == expected { continue }
            let index =
                zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                ?? min(got.count, expected.count)
            let side = index < first.count ? "source" : "destination"
            if index >= got.count {
                return
                    "vCPU \(vcpu): the console stops after \(got.count) lines; expected \(expected.count) (next: \(expected[index]))"
            }
            if index >= expected.count {
                return "vCPU \(vcpu): extra line from the \(side): \(got[index])"
            }
            let step = Self.step(of: got[index])
            let wanted = Self.step(of: expected[index])
            if let step, let wanted, step < wanted {
                return "vCPU \(vcpu): step \(step) printed again by the \(side) (\(got[index]))"
            }
            if let step, let wanted, step > wanted {
                return "vCPU \(vcpu): line for step \(wanted) lost (the \(side) printed \(got[index]) next)"
            }
            return
                "vCPU \(vcpu): the \(side) printed \(got[index]), a run that never migrated prints \(expected[index])"
        }
        return nil
    }

    /// The step number in a console line (`… step S checksum …`).
    public static func step(of line: String) -> UInt64? {
        let words = line.split(separator: " ")
        guard let index = words.firstIndex(of: "step"), index + 1 < words.count else { return nil }
        return UInt64(words[index + 1])
    }
}
