import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport

/// Why a disk move did not complete. Every message names the problem and the fix; the code maps
/// to the CLI's exit codes and to the `ABORT` reason sent to the peer.
public struct DiskMoveError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The destination refused the disk (no room, the file exists, no common version, keys).
        case refused
        /// The connection failed or the peer vanished.
        case transport
        /// The peer sent bytes that break Protocol.md section 10.
        case protocolViolation
        /// A block or the disk's digest did not verify.
        case verification
        /// The peer aborted the move (its message says why).
        case peerAborted
        /// A local system call failed (reading the disk, writing the copy, statvfs).
        case system
        /// Invalid settings: a key file, a path, an address.
        case configuration
        /// An operator cancelled the move on this side (`DiskMoveCancellation`).
        case cancelled
    }

    public var code: Code
    public var message: String
    /// The reason the peer sent with its `ABORT`, if this is `.peerAborted`.
    public var peerReason: AbortReason?

    public init(_ code: Code, _ message: String, peerReason: AbortReason? = nil) {
        self.code = code
        self.message = message
        self.peerReason = peerReason
    }

    public var description: String { message }

    /// The `ABORT` reason that tells the peer what went wrong here.
    var abortReason: AbortReason {
        switch code {
        case .protocolViolation: return .protocolViolation
        case .verification: return .verification
        case .transport, .system: return .io
        case .cancelled: return .cancelled
        case .refused, .peerAborted, .configuration: return .other
        }
    }

    /// Wraps an error of the layers below, naming the phase it happened in.
    static func wrap(_ error: any Error, during phase: String) -> DiskMoveError {
        switch error {
        case let move as DiskMoveError:
            return move
        case let transport as TransportError:
            switch transport.code {
            case .peerAborted:
                let reason = transport.abortReason.map { AbortReason(wireValue: $0) }
                return DiskMoveError(
                    .peerAborted, "the peer aborted during \(phase): \(transport.message)", peerReason: reason)
            case .unauthenticated: return DiskMoveError(.refused, "authentication failed: \(transport.message)")
            case .keyFile, .address: return DiskMoveError(.configuration, transport.message)
            case .protocolViolation: return DiskMoveError(.protocolViolation, "during \(phase): \(transport.message)")
            default: return DiskMoveError(.transport, "connection failed during \(phase): \(transport)")
            }
        case let proto as ProtocolError:
            return DiskMoveError(.protocolViolation, "during \(phase): \(proto)")
        case let codec as CodecError:
            return DiskMoveError(.verification, "during \(phase): \(codec)")
        case let system as SystemError:
            return DiskMoveError(.system, "during \(phase): \(system)")
        default:
            return DiskMoveError(.system, "during \(phase): \(error)")
        }
    }
}
