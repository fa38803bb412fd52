/// The share of each page class in a generated image, in percent (summing to 100).
///
/// Text form: `zero=35,sparse=10,text=30,random=25`. Classes left out count as 0; each may appear
/// once; the values must sum to 100.
public struct ImageMix: Equatable, Sendable, CustomStringConvertible {
    /// Pages left as holes (all zero bytes).
    public var zero: Double
    /// Pages that are mostly zero with a few non-zero 8-byte words.
    public var sparse: Double
    /// Text-like pages: words from a small vocabulary (LZ4 compresses them about 2–4×).
    public var text: Double
    /// Incompressible pseudo-random pages.
    public var random: Double

    public init(zero: Double, sparse: Double, text: Double, random: Double) {
        self.zero = zero
        self.sparse = sparse
        self.text = text
        self.random = random
    }

    /// `zero=35,sparse=10,text=30,random=25`.
    public static let standard = ImageMix(zero: 35, sparse: 10, text: 30, random: 25)

    public var description: String {
        "zero=\(formatNumber(zero)),sparse=\(formatNumber(sparse)),text=\(formatNumber(text)),random=\(formatNumber(random))"
    }

    public static func parse(_ s: String) throws(GuestError) -> ImageMix {
        let expected =
            "expected class=percent pairs separated by commas, e.g. zero=35,sparse=10,text=30,random=25 (classes: zero, sparse, text, random; sum 100)"
        var values: [String: Double] = [:]
        for item in s.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", omittingEmptySubsequences: false)
            guard pair.count == 2 else {
                throw GuestError(.invalidMix, "mix '\(s)': '\(item)' is not class=percent; \(expected)")
            }
            let name = String(pair[0]).trimmingSpaces.lowercased()
            guard ["zero", "sparse", "text", "random"].contains(name) else {
                throw GuestError(.invalidMix, "mix '\(s)': unknown page class '\(name)'; \(expected)")
            }
            guard values[name] == nil else {
                throw GuestError(.invalidMix, "mix '\(s)': class '\(name)' given twice; \(expected)")
            }
            var valueText = String(pair[1]).trimmingSpaces
            if valueText.hasSuffix("%") { valueText.removeLast() }
            guard let value = Double(valueText), value.isFinite, value >= 0, value <= 100 else {
                throw GuestError(
                    .invalidMix, "mix '\(s)': '\(pair[1])' for '\(name)' is not a percentage from 0 to 100; \(expected)"
                )
            }
            values[name] = value
        }
        let mix = ImageMix(
            zero: values["zero"] ?? 0, sparse: values["sparse"] ?? 0,
            text: values["text"] ?? 0, random: values["random"] ?? 0)
        let sum = mix.zero + mix.sparse + mix.text + mix.random
        guard abs(sum - 100) < 1e-6 else {
            throw GuestError(.invalidMix, "mix '\(s)': percentages sum to \(formatNumber(sum)), not 100; \(expected)")
        }
        return mix
    }
}

/// `35` for whole numbers, else the shortest decimal that reads back exactly (`12.5`).
func formatNumber(_ value: Double) -> String {
    if value == value.rounded(), abs(value) < 1e15 {
        return String(Int64(value))
    }
    return String(value)
}
