import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport

extension MigrationError {
    /// Wraps any error from the layers below, naming the phase it happened in.
    static func wrap(_ error: any Error, during phase: String, guest: GuestLocation) -> MigrationError {
        switch error {
        case var migration as MigrationError:
            migration.guest = guest
            return migration
        case let transport as TransportError:
            if transport.code == .peerAborted {
                return MigrationError(.peerAborted, "peer aborted during \(phase): \(transport.message)", guest: guest)
            }
            if transport.code == .unauthenticated {
                return MigrationError(
                    .refused, "authentication failed during \(phase): \(transport.message)", guest: guest)
            }
            if transport.code == .keyFile {
                return MigrationError(.configuration, transport.message, guest: guest)
            }
            if transport.code == .protocolViolation {
                return MigrationError(.protocolViolation, "during \(phase): \(transport.message)", guest: guest)
            }
            return MigrationError(.transport, "connection failed during \(phase): \(transport)", guest: guest)
        case let proto as ProtocolError:
            return MigrationError(.protocolViolation, "during \(phase): \(proto)", guest: guest)
        case let codec as CodecError:
            return MigrationError(.verification, "during \(phase): \(codec)", guest: guest)
        case let system as SystemError where system.code == .locked:
            // Another agent uses the image: a configuration to fix, not a failed system call.
            return MigrationError(.configuration, "during \(phase): \(system)", guest: guest)
        case let system as SystemError:
            return MigrationError(.system, "during \(phase): \(system)", guest: guest)
        case let classified as MigrationClassifiedError:
            return MigrationError(classified.migrationCode, "during \(phase): \(classified)", guest: guest)
        default:
            return MigrationError(.system, "during \(phase): \(error)", guest: guest)
        }
    }

    /// The ABORT reason code (Protocol.md section 3.13) that tells the peer what went wrong.
    var abortReason: AbortReason {
        switch code {
        case .protocolViolation: return .protocolViolation
        case .verification: return .verification
        case .notConverged: return .notConverged
        case .transport, .system: return .io
        case .cancelled: return .cancelled
        case .refused, .peerAborted, .configuration: return .other
        }
    }
}
