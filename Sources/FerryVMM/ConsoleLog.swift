import FerrySystem

/// The guest's console as the control socket serves it: every line numbered from 0 (the
/// cursor), the last `capacity` kept. The KVM guest's lines are what it prints; the built-in
/// guest has no console, so the VMM writes its progress there (a line per second, and one per
/// lifecycle event).
final class ConsoleLog: @unchecked Sendable {
    struct Line {
        var sequence: Int
        var vcpu: Int?
        var text: String
    }

    private let condition = MonotonicCondition()
    private var lines: [Line] = []
    private var next = 0
    let capacity: Int

    init(capacity: Int = 4096) { self.capacity = capacity }

    func append(_ text: String, vcpu: Int? = nil) {
        condition.withLock {
            lines.append(Line(sequence: next, vcpu: vcpu, text: text))
            next += 1
            if lines.count > capacity { lines.removeFirst(lines.count - capacity) }
        }
    }

    /// Lines numbered `cursor` and later (at most `limit`), the cursor to ask with next, and how
    /// many lines after `cursor` were already dropped from the buffer.
    func since(_ cursor: Int, limit: Int) -> (lines: [Line], next: Int, dropped: Int) {
        condition.withLock {
            let first = lines.first?.sequence ?? next
            let dropped = max(0, first - cursor)
            let start = max(cursor, first)
            let chosen = Array(lines.drop { $0.sequence < start }.prefix(limit))
            return (chosen, chosen.last.map { $0.sequence + 1 } ?? max(cursor, first), dropped)
        }
    }
}
