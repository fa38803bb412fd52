import FerryProtocol
import FerrySystem

/// Why a network operation failed. `message` names the problem (and the fix where there is one);
/// `code` is for callers that react differently to, say, a timeout and a refused connection;
/// `cause` is the failed system call behind it, if one is (its errno as a value).
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// A host, port, endpoint, interface or MAC/IP address that cannot be parsed or resolved.
        case address
        /// The connection could not be established (refused, unreachable, no answer in time).
        case connect
        /// The listening socket could not be set up (port in use, no permission).
        case listen
        /// Accepting an incoming connection failed.
        case accept
        /// The peer closed or reset the connection.
        case peerClosed
        /// No data (or no connection) arrived within the configured time.
        case timeout
        /// Any other failure of a socket call.
        case io
        /// The peer sent bytes that break the frame layer's rules (or a local caller tried to).
        case protocolViolation
        /// The peer sent an ABORT frame; `abortReason` holds its reason and `message` its text.
        case peerAborted
        /// The peers could not prove to each other that they hold the same key (or one has none).
        case unauthenticated
        /// An encrypted record did not open: altered in flight, or the peers' keys differ.
        case decryption
        /// A key file that cannot be read, is not a key, or is readable by others.
        case keyFile
    }

    public var code: Code
    public var message: String
    /// The ABORT frame's reason code, set only for `.peerAborted`.
    public var abortReason: UInt16?
    /// The decoder's verdict, set for `.protocolViolation` when it came from FerryProtocol.
    public var protocolError: ProtocolError?
    /// The system call that failed, set when one did (from `valueOrErrno`).
    public var cause: SystemError?

    public init(
        _ code: Code, _ message: String, abortReason: UInt16? = nil, protocolError: ProtocolError? = nil,
        cause: SystemError? = nil
    ) {
        self.code = code
        self.message = message
        self.abortReason = abortReason
        self.protocolError = protocolError
        self.cause = cause
    }

    /// `what: ECONNREFUSED (Connection refused)` followed by `hint`, with `failure` as the cause.
    init(_ code: Code, _ what: String, failed failure: SystemError, hint: String = "") {
        let errno = failure.errno.map { "\($0)" } ?? failure.description
        self.init(code, "\(what): \(errno)\(hint)", cause: failure)
    }

    /// The error `FramedConnection.receive` throws for an ABORT frame.
    public static func peerAborted(reason: UInt16, message: String) -> TransportError {
        TransportError(.peerAborted, message, abortReason: reason)
    }

    public var description: String {
        switch code {
        case .peerAborted:
            let reason = abortReason ?? 0xFFFF
            let text = message.isEmpty ? "(no message)" : message
            return "peer aborted the migration (reason \(reason) \(AbortReason.name(wireValue: reason))): \(text)"
        default:
            return message
        }
    }
}
