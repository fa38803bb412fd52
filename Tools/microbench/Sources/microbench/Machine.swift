import FerrySystem
import Glibc

/// What the figures were measured on, for the header of the output.
enum Machine {
    static var summary: String {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let cpu =
            firstLine(of: "/proc/cpuinfo", startingWith: "model name").map { line in
                String(line.drop { $0 != ":" }.dropFirst().drop { $0 == " " })
            } ?? "unknown CPU"
        let thp = firstLine(of: "/sys/kernel/mm/transparent_hugepage/enabled", startingWith: "") ?? "?"
        return
            "\(cpu), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs online, Linux \(release), page \(systemPageSize) B, THP \(thp)"
    }

    private static func firstLine(of path: String, startingWith prefix: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if text.hasPrefix(prefix) { return String(text.dropLast(text.hasSuffix("\n") ? 1 : 0)) }
        }
        return nil
    }
}
