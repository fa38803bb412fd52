import FerryMigration
import FerryProtocol

/// What the counter guest puts on the wire besides its pages: its numbers (guest kind, section
/// kinds and versions), its description in `GUEST_CONFIG`, and its `DEVICE_STATE` sections. Both
/// sides use this file, so it is the one place that says what the bytes mean.
public enum CounterGuestFormat {
    /// `HELLO.guest_kind`. Ferry's own guests are 1 and 2; a VMM picks values ≥ 0x100.
    public static let guestKind: UInt16 = 0x100
    /// `HELLO.cpu_state_format`, the version of the vCPU sections: body = counter, prng
    /// (2 × 8 bytes, little-endian).
    public static let vcpuFormat: UInt16 = 1
    /// The counter device's section kind: 2…0x7FFF is mandatory (a destination that does not
    /// know it fails the migration), which is right for a device the guest cannot run without.
    public static let deviceKind: UInt16 = 0x100
    /// The device section's body layout: ticks, scanline (2 × 8 bytes, little-endian).
    public static let deviceVersion: UInt16 = 1

    /// Where the regions sit in the guest's physical address space.
    public static let ramAddress: UInt64 = 0
    public static let vramAddress: UInt64 = 0x1_0000_0000

    /// The guest's `DEVICE_STATE`: one vCPU section per vCPU (kind 1, instance = index, vCPU 0
    /// first), then the counter device (instance 0).
    public static func sections(of state: CounterMachineState) -> [DeviceStateSection] {
        let vcpus = state.vcpus.enumerated().map { index, registers in
            DeviceStateSection(
                kind: DeviceStateSection.vcpu, version: vcpuFormat, instance: UInt32(index),
                body: encode(registers.counter, registers.prng))
        }
        let device = DeviceStateSection(
            kind: deviceKind, version: deviceVersion, instance: 0,
            body: encode(state.device.ticks, state.device.scanline))
        return vcpus + [device]
    }

    /// Reads `DEVICE_STATE` back. The engine has checked that the vCPU sections come first, are
    /// numbered 0, 1, … and have version `vcpuFormat`; the rest is the guest kind's to check.
    public static func state(from sections: [DeviceStateSection]) throws(CounterGuestError) -> CounterMachineState {
        var vcpus: [CounterRegisters] = []
        var device: CounterDevice?
        for section in sections {
            switch section.kind {
            case DeviceStateSection.vcpu:
                let (counter, prng) = try decode(section, "vCPU \(section.instance)")
                vcpus.append(CounterRegisters(counter: counter, prng: prng))
            case deviceKind:
                guard section.version == deviceVersion else {
                    // A newer source's layout this build cannot read: refuse before VERIFIED,
                    // while the source still owns the guest.
                    throw CounterGuestError(
                        "counter device section version \(section.version); this build reads version \(deviceVersion)")
                }
                let (ticks, scanline) = try decode(section, "the counter device")
                device = CounterDevice(ticks: ticks, scanline: scanline)
            default:
                // Bit 15 set: optional, ignore what we do not know. Anything else is mandatory.
                if !section.isOptional {
                    throw CounterGuestError("the counter guest has no device of section kind \(section.kind)")
                }
            }
        }
        guard let device else { throw CounterGuestError("DEVICE_STATE has no counter device section") }
        return CounterMachineState(vcpus: vcpus, device: device)
    }

    /// `GUEST_CONFIG.workload` text: "rate=N", vCPU steps per second.
    public static func parameters(stepsPerSecond: Int) -> String { "rate=\(stepsPerSecond)" }

    public static func stepsPerSecond(from parameters: String) throws(CounterGuestError) -> Int {
        guard parameters.hasPrefix("rate="), let rate = Int(parameters.dropFirst(5)),
            (1_000...10_000_000).contains(rate)
        else {
            throw CounterGuestError(
                "counter guest parameters \"\(parameters)\": expected rate=N with N in 1000…10000000")
        }
        return rate
    }

    private static func encode(_ first: UInt64, _ second: UInt64) -> [UInt8] {
        (0..<16).map { UInt8(truncatingIfNeeded: ($0 < 8 ? first : second) >> (8 * UInt64($0 % 8))) }
    }

    private static func decode(_ section: DeviceStateSection, _ what: String) throws(CounterGuestError) -> (
        UInt64, UInt64
    ) {
        guard section.body.count == 16 else {
            throw CounterGuestError("\(what): section of \(section.body.count) bytes, expected 16")
        }
        func word(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(section.body[at + $1]) << (8 * UInt64($1)) } }
        return (word(0), word(8))
    }
}

/// The counter guest's errors. `MigrationClassifiedError` tells the engine how to classify them
/// (exit code, `ABORT` reason); an error without it is classified as a local system failure.
public struct CounterGuestError: Error, MigrationClassifiedError, CustomStringConvertible {
    public var description: String
    /// `.protocolViolation` (the default): the source sent a state or description this
    /// destination cannot use, and the engine aborts with reason `protocol`; the source's guest
    /// keeps running. `.configuration`: a setting on this side is wrong.
    public var migrationCode: MigrationError.Code

    public init(_ description: String, code: MigrationError.Code = .protocolViolation) {
        self.description = description
        self.migrationCode = code
    }
}
