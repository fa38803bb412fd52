import Foundation

/// A value set on one thread and read on another, for test plumbing.
public final class Box<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value?
    public init() {}
    public var value: Value? {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stored
        }
        set {
            lock.lock()
            stored = newValue
            lock.unlock()
        }
    }
}
