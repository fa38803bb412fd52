/// A strict reader of the Prometheus text exposition format (version 0.0.4), independent of
/// the library that writes it: every line must be a comment, `# HELP`/`# TYPE`, or a sample
/// `name{label="value",...} value`; a histogram's `+Inf` bucket must equal its `_count`.
public struct PrometheusText: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public struct Malformed: Error, CustomStringConvertible {
        public var description: String
    }

    public var samples: [Sample] = []
    /// `# TYPE` lines: metric family → counter, gauge, histogram, summary, untyped.
    public var types: [String: String] = [:]

    /// The value of the sample with exactly these labels, nil when there is none.
    public subscript(name: String, labels: [String: String]) -> Double? {
        samples.first(where: { $0.name == name && $0.labels == labels })?.value
    }

    public static func parse(_ text: String) throws -> PrometheusText {
        var result = PrometheusText()
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            func fail(_ why: String) -> Malformed { Malformed(description: "line \(number + 1) '\(line)': \(why)") }
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let words = line.split(separator: " ", maxSplits: 3)
                if words.count >= 2, words[1] == "TYPE" {
                    guard words.count == 4, isName(words[2]),
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(words[3])
                    else { throw fail("a malformed TYPE line") }
                    result.types[String(words[2])] = String(words[3])
                }
                continue
            }
            result.samples.append(try sample(Substring(line), fail: fail))
        }
        try result.checkHistograms()
        return result
    }

    private static func sample(_ line: Substring, fail: (String) -> Malformed) throws -> Sample {
        var rest = line
        let name = rest.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" })
        guard isName(name) else { throw fail("no metric name") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.hasPrefix("{") {
            rest = rest.dropFirst()
            while !rest.hasPrefix("}") {
                let label = rest.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" })
                guard isName(label), rest.dropFirst(label.count).hasPrefix("=\"") else {
                    throw fail("a malformed label")
                }
                rest = rest.dropFirst(label.count + 2)
                var value = ""
                while true {
                    guard let character = rest.first else { throw fail("an unterminated label value") }
                    rest = rest.dropFirst()
                    if character == "\"" { break }
                    if character == "\\" {
                        guard let escaped = rest.first, ["\\", "\"", "n"].contains(escaped) else {
                            throw fail("a bad escape")
                        }
                        value.append(escaped == "n" ? "\n" : escaped)
                        rest = rest.dropFirst()
                    } else {
                        value.append(character)
                    }
                }
                guard labels.updateValue(value, forKey: String(label)) == nil else { throw fail("a repeated label") }
                if rest.hasPrefix(",") { rest = rest.dropFirst() }
            }
            rest = rest.dropFirst()
        }
        let fields = rest.split(separator: " ")
        guard rest.hasPrefix(" "), (1...2).contains(fields.count), let value = number(fields[0]) else {
            throw fail("no value after the name and labels")
        }
        return Sample(name: String(name), labels: labels, value: value)
    }

    private static func number(_ text: Substring) -> Double? {
        switch text {
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default: return Double(text)
        }
    }

    private static func isName(_ text: Substring) -> Bool {
        guard let first = text.first, first.isLetter || first == "_" || first == ":" else { return false }
        return text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
    }

    private func checkHistograms() throws {
        for (family, type) in types where type == "histogram" {
            for count in samples where count.name == family + "_count" {
                let infinite = samples.first {
                    $0.name == family + "_bucket" && $0.labels["le"] == "+Inf"
                        && $0.labels.filter({ $0.key != "le" }) == count.labels
                }
                guard let infinite, infinite.value == count.value else {
                    throw Malformed(description: "\(family) \(count.labels): the +Inf bucket does not equal _count")
                }
            }
        }
    }
}
