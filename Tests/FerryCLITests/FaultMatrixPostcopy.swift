import FerryTestSupport
import Foundation
import Glibc

/// The fault matrix's invariants once post-copy's `COMMIT` is written (Protocol.md 11.4): the
/// source never resumes its paused copy again; the guest runs on the destination (a cut is
/// resumed), or it is lost — when either host dies, when a page arrives damaged, or when the
/// handoff between `COMMIT` and `RESUMED` fails — and then every survivor says so in its one
/// line, and no `PATH` is left: the destination's incomplete image is `PATH.lost`.
extension FaultMatrixTests {
    /// What a post-copy case ended with, read off the processes and the destination's files.
    struct PostcopyEnding {
        let senderKilled: Bool
        let receiverKilled: Bool
        /// The source's one line says the guest is lost (and it did not resume its copy).
        let sourceSaysLost: Bool
        let destinationSaysLost: Bool
        /// The source resumed its paused copy (a pre-copy failure's "ran on the source until now").
        let sourceResumedCopy: Bool
        let sourceMigrated: Bool
        let sourceResumed: Bool
        let destinationRuns: Bool
        let pathExists: Bool
        let partialExists: Bool
        let lostExists: Bool
        /// How the source settled a lost `RESUMED` or `VERIFIED` (its report's handoff line), if it had to.
        let how: String?

        init(sent: FerryProcess.Outcome, received: FerryProcess.Outcome, target: String) {
            senderKilled = sent.signal == SIGKILL
            receiverKilled = received.signal == SIGKILL
            let errorLine = { (outcome: FerryProcess.Outcome) in
                outcome.stderr.split(separator: "\n").first { $0.hasPrefix("ferry: error:") }.map(String.init) ?? ""
            }
            sourceSaysLost = sent.signal == nil && errorLine(sent).contains("the guest is lost")
            destinationSaysLost = received.signal == nil && errorLine(received).contains("is lost")
            sourceResumedCopy = sent.stderr.contains("guest ran on the source until now")
            sourceMigrated = sent.signal == nil && sent.status == 0 && sent.stdout.contains("source report: migrated")
            sourceResumed = sourceMigrated && sent.stdout.contains("resumed      after losing round")
            destinationRuns =
                received.signal == nil && received.status == 0
                && received.stdout.contains("destination report: migrated")
            pathExists = FileManager.default.fileExists(atPath: target)
            partialExists = FileManager.default.fileExists(atPath: target + ".partial")
            lostExists = FileManager.default.fileExists(atPath: target + ".lost")
            how =
                sent.stdout.contains("the first COMMIT was lost")
                ? "COMMIT sent again"
                : sent.stdout.contains("RESUMED was lost")
                    ? "RESUMED asked for" : sent.stdout.contains("VERIFIED was lost") ? "VERIFIED asked for" : nil
        }

        /// The guest's fate, short, for the table.
        var summary: String {
            if destinationRuns {
                if senderKilled { return "migrated (dest verified every page); source killed" }
                guard sourceMigrated else { return "guest on dest; source: unclear" }
                return sourceResumed ? "resumed, migrated" : "migrated" + (how.map { " (\($0))" } ?? "")
            }
            if senderKilled {
                return destinationSaysLost ? "lost (dest says so, PATH.lost)" : "source killed; dest unclear"
            }
            if receiverKilled { return sourceSaysLost ? "lost (source says so)" : "dest killed; source unclear" }
            switch (sourceSaysLost, destinationSaysLost) {
            case (true, true): return "lost (both say so, PATH.lost)"
            case (true, false): return "lost (source says so; dest never resumed, discards .partial)"
            case (false, true): return "lost (dest says so, PATH.lost); source unclear"
            case (false, false): return "unclear"
            }
        }
    }

    /// The invariants of a case whose fault came at or after post-copy's `COMMIT`.
    static func judgeAfterPostcopyCommit(
        sent: FerryProcess.Outcome, received: FerryProcess.Outcome, target: String, injected: Bool,
        reached: [WirePhase]
    ) -> CaseResult {
        var problems = survivorProblems(sent: sent, received: received)
        if !injected { problems.append("the fault was never injected; phases reached: \(reached.map(\.rawValue))") }
        let end = PostcopyEnding(sent: sent, received: received, target: target)
        if end.sourceResumedCopy {
            problems.append("the source resumed its paused copy after COMMIT (Protocol.md 11.4: never)")
        }
        if end.destinationRuns && end.sourceSaysLost {
            problems.append("the source reports the guest lost but it runs on the destination")
        }
        if end.destinationSaysLost && end.sourceMigrated {
            problems.append("the destination lost the guest but the source reports it migrated")
        }
        if !end.senderKilled && !end.destinationRuns && !end.sourceSaysLost {
            problems.append("the guest does not run on the destination and the source does not say it is lost")
        }
        if !end.receiverKilled && !end.destinationRuns && end.lostExists != end.destinationSaysLost {
            problems.append("the destination must say the guest is lost exactly when it leaves PATH.lost")
        }
        if end.senderKilled && !end.receiverKilled && !end.destinationRuns && !end.destinationSaysLost {
            problems.append("the source died and the destination did not say the guest is lost")
        }
        if end.pathExists && !end.destinationRuns {
            problems.append("\(target) exists but the guest's memory never verified (it lacks pages)")
        }
        if !end.receiverKilled && end.partialExists { problems.append("the destination left \(target).partial") }
        let outcome = end.summary + " (S \(ending(sent)), D \(ending(received)))"
        let firstLine = { (text: String) in
            text.split(separator: "\n").first { $0.hasPrefix("ferry: error:") }.map(String.init) ?? ""
        }
        let details =
            "source: \(ending(sent)) \(firstLine(sent.stderr))\ndestination: \(ending(received)) \(firstLine(received.stderr))\n"
            + "phases: \(reached.map(\.rawValue)); image: \(end.pathExists ? "PATH" : "-") "
            + "\(end.partialExists ? ".partial" : "") \(end.lostExists ? ".lost" : "")\n" + handoffLine(sent)
        if ProcessInfo.processInfo.environment["FERRY_FAULT_VERBOSE"] != nil { print("[\(outcome)]\n" + details) }
        return CaseResult(outcome: outcome, problems: problems, details: details)
    }

    /// The source report's `handoff` line (how a lost acknowledgement was settled), if any, for the details.
    static func handoffLine(_ sent: FerryProcess.Outcome) -> String {
        sent.stdout.split(separator: "\n").first { $0.hasPrefix("  handoff ") }.map { "source\($0)\n" } ?? ""
    }

    /// A process that was not killed dies of no signal and states its outcome in one line.
    static func survivorProblems(sent: FerryProcess.Outcome, received: FerryProcess.Outcome) -> [String] {
        var problems: [String] = []
        for (name, outcome) in [("source", sent), ("destination", received)] {
            if let signal = outcome.signal, signal != SIGKILL { problems.append("\(name) died of signal \(signal)") }
            if outcome.signal == nil {
                let lines = (outcome.stderr + "\n" + outcome.stdout).split(separator: "\n")
                    .filter { $0.hasPrefix("ferry: error:") || $0.contains(" report: ") }
                if lines.count != 1 {
                    problems.append("\(name) must state its outcome in one line, printed \(lines.count)")
                }
            }
        }
        return problems
    }
}
