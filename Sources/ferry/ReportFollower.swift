import Foundation

/// Following a long operation of the controller (a drain, a balancing pass, a consolidation) with
/// `--wait`: its report is read again every half second while its phase says it runs, its summary
/// shown as progress on standard error; at the end the report goes to standard output, as JSON
/// with `--json` and as text otherwise.
enum ReportFollower {
    /// The report once its phase is no longer `running`. Past `timeout` seconds: exit 1 with
    /// "`what` still runs after N s: summary (`hint`)".
    static func follow(
        _ first: [String: Any], runningPhase running: String, timeout: Double, what: String, hint: String,
        summary: ([String: Any]) -> String, next: () throws -> [String: Any]
    ) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var report = first
        while report["phase"] as? String == running {
            guard Date() < deadline else {
                throw CommandError(
                    description: "\(what) still runs after \(Int(timeout)) s: \(summary(report)) (\(hint))",
                    exitCode: 1)
            }
            Terminal.progress(summary(report))
            Thread.sleep(forTimeInterval: 0.5)
            report = try next()
        }
        return report
    }

    /// The report on standard output: JSON when the session asked for it, else `text`.
    static func show(_ report: [String: Any], json: Bool, text: ([String: Any]) -> String) throws {
        if json {
            FileHandle.standardOutput.write(try JSONSerialization.data(withJSONObject: report) + Data("\n".utf8))
        } else {
            HumanOutput.print(text(report))
        }
    }
}
