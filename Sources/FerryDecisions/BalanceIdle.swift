// Why a balancing pass chose nothing, in the terms an operator acts on. Pure.

/// Why a pass chose no move.
public struct BalanceIdle: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, Codable {
        /// No host is above the threshold: nothing to do.
        case belowThreshold = "below_threshold"
        /// Hosts are hot but the hourly cap allows no more moves.
        case capReached = "cap_reached"
        /// Hot hosts' guests that could move moved within the cool-down.
        case coolDown = "cool_down"
        /// None of the hot hosts' guests may move (moving, not running, leased, busy).
        case nothingMovable = "nothing_movable"
        /// Guests could move but no move is legal (no room below the target, too little benefit).
        case noLegalMove = "no_legal_move"
    }

    public var kind: Kind
    public var text: String

    public init(kind: Kind, text: String) {
        self.kind = kind
        self.text = text
    }
}

extension BalancePass {
    /// Why `plan(hosts:guests:parameters:)` chose nothing over this cluster (the caller asks only
    /// when it did): the first of below threshold, cap reached, cool-down, nothing movable, and
    /// no legal move that holds.
    public static func idle(hosts: [ClusterHost], guests: [BalanceGuest], parameters: BalanceParameters)
        -> BalanceIdle
    {
        let loads = loads(hosts: hosts, guests: guests)
        let hot = loads.filter { $0.value > parameters.highThreshold }.sorted {
            $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key
        }
        let threshold = format(parameters.highThreshold)
        guard let hottest = hot.first else {
            let top = loads.max { $0.value != $1.value ? $0.value < $1.value : $0.key > $1.key }
            let most = top.map { " (the most loaded, \($0.key), at \(format($0.value)))" } ?? " (no host to weigh)"
            return BalanceIdle(kind: .belowThreshold, text: "no host is above the threshold \(threshold)\(most)")
        }
        let named =
            "host \(hottest.key) at \(format(hottest.value)) > \(threshold)"
            + (hot.count > 1 ? " and \(hot.count - 1) more hot" : "")
        guard parameters.movesAllowed > 0 else {
            return BalanceIdle(
                kind: .capReached, text: "\(named), but the hourly cap of moves is reached: none is allowed now")
        }
        let hotIDs = Set(hot.map(\.key))
        let onHot = guests.filter { hotIDs.contains($0.host) && $0.movable }
        guard !onHot.isEmpty else {
            return BalanceIdle(
                kind: .nothingMovable,
                text: "\(named), but none of the hot hosts' guests may move (moving, not running, leased or busy)")
        }
        let cooled = onHot.filter { ($0.secondsSinceLastMove ?? .infinity) >= parameters.coolDownSeconds }
        guard !cooled.isEmpty else {
            return BalanceIdle(
                kind: .coolDown,
                text: "\(named), but every guest of it that may move moved (or tried to) within the cool-down of"
                    + " \(Int(parameters.coolDownSeconds.rounded())) s")
        }
        return BalanceIdle(
            kind: .noLegalMove,
            text: "\(named), but no move is legal: no host that takes the guests stays below"
                + " \(format(parameters.target - parameters.margin)) with one of them, or no move brings two hosts"
                + " \(format(parameters.margin)) closer at the least benefit per second")
    }

    /// Two decimals: 0.93, 0.8 → "0.80".
    public static func format(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        let hundredths = Int((abs(value) * 100).rounded())
        let fraction = hundredths % 100
        return (value < 0 && hundredths > 0 ? "-" : "") + "\(hundredths / 100)." + (fraction < 10 ? "0" : "")
            + "\(fraction)"
    }
}
