import FerryHostModel
import Foundation
import Glibc

/// What the agent keeps of each migration in `STATE/migrations/` (one JSON file each, replaced
/// atomically), so that a restarted agent knows which migration its `migrating-out` or
/// `migrating-in` guest belongs to and whom to ask about it.
struct MigrationRecords: Sendable {
    let directory: String

    /// An outgoing migration: the resource as last recorded, and the guest it moves.
    struct Outgoing: Codable, Sendable {
        var resource: MigrationResource
        var guestID: GuestID
        /// A cold migration: the guest's state before it (`running`, `stopped`, `suspended`),
        /// which a failed one puts back.
        var coldFrom: GuestState?
        /// A cold migration's files as offered (their paths here), and its options.
        var coldFiles: [ColdFile]?
        var coldOptions: MigrationRequest.Options?
    }

    /// An incoming migration: the request, the answer, and how it ended (nil while it runs).
    struct Incoming: Codable, Sendable {
        var request: IncomingMigrationRequest
        var reservation: IncomingMigrationReservation
        var ended: IncomingMigrationStatus.State?
        var exitStatus: Int32?
        var error: String?
        /// A cold migration's files received and verified so far, by name.
        var received: [String]?
    }

    init(directory: String) {
        self.directory = directory
        mkdir(directory, 0o700)
    }

    func save(_ outgoing: Outgoing) { write("out-\(outgoing.resource.id)", outgoing) }
    func save(_ incoming: Incoming) { write("in-\(incoming.request.migrationID)", incoming) }

    /// Forgets an incoming migration that was refused before its row existed.
    func remove(_ incoming: Incoming) { unlink("\(directory)/in-\(incoming.request.migrationID).json") }

    func outgoing() -> [Outgoing] { read(prefix: "out-") }
    func incoming() -> [Incoming] { read(prefix: "in-") }

    private func write(_ stem: String, _ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(value) else { return }
        let path = "\(directory)/\(stem).json"
        let temporary = path + ".tmp"
        guard (try? data.write(to: URL(fileURLWithPath: temporary))) != nil else { return }
        let descriptor = open(temporary, O_RDONLY)
        if descriptor >= 0 {
            fsync(descriptor)
            close(descriptor)
        }
        rename(temporary, path)
    }

    private func read<Value: Decodable>(prefix: String) -> [Value] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return names.filter { $0.hasPrefix(prefix) && $0.hasSuffix(".json") }.compactMap { name in
            FileManager.default.contents(atPath: "\(directory)/\(name)").flatMap {
                try? decoder.decode(Value.self, from: $0)
            }
        }
    }
}
