import FerryControl
import Foundation
import Logging
import PostgresNIO

/// How the store's connections are made: the URL's server, user, database and TLS mode, and the
/// session settings every connection starts with (`lock_timeout`, `application_name`).
struct PostgresSettings: Sendable {
    let url: PostgresURL
    let lockTimeout: Duration

    var startupParameters: [(String, String)] {
        let milliseconds = max(
            1, lockTimeout.components.seconds * 1000 + lockTimeout.components.attoseconds / 1_000_000_000_000_000)
        return [("lock_timeout", "\(milliseconds)"), ("application_name", "ferry-control")]
    }

    func clientConfiguration() throws(ControlError) -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch url.sslMode {
        case .disable: tls = .disable
        case .prefer: tls = .prefer(.makeClientConfiguration())
        case .require: tls = .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(
            host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
            tls: tls)
        configuration.options.additionalStartupParameters = startupParameters
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }

    func connectionConfiguration() throws(ControlError) -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        do {
            switch url.sslMode {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
        } catch {
            throw ControlError(
                .database, "control store \(url): could not set up TLS; try ?sslmode=disable on a trusted network",
                cause: error)
        }
        var configuration = PostgresConnection.Configuration(
            host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
            tls: tls)
        configuration.options.additionalStartupParameters = startupParameters
        return configuration
    }

    /// One connection outside the pool (the check and the migrations at `connect`), closed when
    /// `body` returns.
    func withConnection<T: Sendable>(
        logger: Logger, doing what: String, _ body: (PostgresConnection) async throws -> T
    ) async throws(ControlError) -> T {
        do {
            let connection = try await PostgresConnection.connect(
                configuration: try connectionConfiguration(), id: 0, logger: logger)
            do {
                let result = try await body(connection)
                try? await connection.close()
                return result
            } catch {
                try? await connection.close()
                throw error
            }
        } catch {
            throw PostgresFailures.controlError(error, url: url, doing: what)
        }
    }
}
