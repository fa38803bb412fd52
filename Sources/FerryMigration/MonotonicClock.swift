import FerrySystem

extension Double {
    /// Seconds → milliseconds rounded to 0.01 ms, for reports.
    var milliseconds: Double { (self * 100_000).rounded() / 100 }
}
