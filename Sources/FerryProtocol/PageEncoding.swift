/// Per-page encoding in a PAGE_BATCH entry (Protocol.md section 3.5).
public enum PageEncoding: UInt8, Sendable, CaseIterable {
    case zero = 1
    case raw = 2
    case lz4 = 3
}
