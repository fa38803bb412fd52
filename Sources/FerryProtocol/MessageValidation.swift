/// Messages check their own field rules; decoders run the check on what they read and encoders on
/// what they are about to write.
protocol ValidatingMessage: FrameMessage {
    func validate() throws(ProtocolError)
}

extension ValidatingMessage {
    /// Encoding a message that breaks the protocol is a program bug: the peer would reject it.
    /// Callers building messages from user input call `validate()` first.
    func requireValid() {
        do {
            try validate()
        } catch {
            preconditionFailure("encoding an invalid \(Self.frameType) message: \(error.message)")
        }
    }
}

/// Length limits of `str16` fields (Protocol.md section 3).
public enum StringLimits {
    public static let name = 255
    public static let message = 1024
    public static let workload = 1024
    public static let note = 4094
}
