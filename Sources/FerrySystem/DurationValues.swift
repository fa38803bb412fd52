extension Duration {
    /// This duration in seconds, as a floating-point number.
    @inlinable public var inSeconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    /// This duration in whole milliseconds (rounded toward zero; saturating at `Int`'s range).
    @inlinable public var inMilliseconds: Int {
        let milliseconds = inSeconds * 1000
        if milliseconds >= Double(Int.max) { return .max }
        if milliseconds <= Double(Int.min) { return .min }
        return Int(milliseconds)
    }
}
