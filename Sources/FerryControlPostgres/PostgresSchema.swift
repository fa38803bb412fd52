import FerryControl
import Foundation
import Logging
import PostgresNIO

/// The controller's tables on PostgreSQL, as versioned migrations recorded in a table of their
/// own (`ferry_control_migrations`): the same tables, constraints and indexes as the SQLite
/// schema (ControlSchema), integers as BIGINT, times as Unix milliseconds. Never edit a migration
/// that has shipped; append the next one. Controllers starting at once take turns (an advisory
/// lock), and a database with a migration this Ferry does not know is refused.
enum PostgresSchema {
    struct Migration: Sendable {
        var identifier: String
        var statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(
            identifier: "v1-cluster",
            statements: [
                """
                CREATE TABLE hosts (
                    id TEXT PRIMARY KEY NOT NULL,
                    address TEXT NOT NULL,
                    vcpus BIGINT NOT NULL CHECK (vcpus >= 0),
                    memory_bytes BIGINT NOT NULL CHECK (memory_bytes >= 0),
                    disk_bytes BIGINT NOT NULL CHECK (disk_bytes >= 0),
                    health TEXT NOT NULL,
                    last_heartbeat_ms BIGINT NOT NULL,
                    registered_ms BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE flavors (
                    name TEXT PRIMARY KEY NOT NULL,
                    vcpus BIGINT NOT NULL, memory_bytes BIGINT NOT NULL, disk_bytes BIGINT NOT NULL,
                    price_per_second_micros BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE images (
                    name TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, disk_template_path TEXT NOT NULL
                )
                """,
                """
                CREATE TABLE projects (
                    name TEXT PRIMARY KEY NOT NULL,
                    quota_guests BIGINT NOT NULL, quota_vcpus BIGINT NOT NULL,
                    quota_memory_bytes BIGINT NOT NULL, quota_disk_bytes BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE guests (
                    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32),
                    project TEXT NOT NULL REFERENCES projects (name),
                    name TEXT NOT NULL,
                    flavor TEXT NOT NULL,
                    image TEXT NOT NULL,
                    vcpus BIGINT NOT NULL, memory_bytes BIGINT NOT NULL, disk_bytes BIGINT NOT NULL,
                    price_per_second_micros BIGINT NOT NULL,
                    image_kind TEXT NOT NULL,
                    disk_template_path TEXT NOT NULL,
                    host TEXT NOT NULL REFERENCES hosts (id),
                    state TEXT NOT NULL,
                    error_reason TEXT,
                    client_token TEXT,
                    generation BIGINT NOT NULL CHECK (generation >= 1),
                    created_ms BIGINT NOT NULL,
                    state_since_ms BIGINT NOT NULL
                )
                """,
                """
                CREATE UNIQUE INDEX guests_by_token ON guests (project, client_token)
                    WHERE client_token IS NOT NULL
                """,
                "CREATE INDEX guests_by_host ON guests (host, state)",
                "CREATE INDEX guests_by_project ON guests (project, state)",
                """
                CREATE TABLE journal (
                    sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    guest_id TEXT NOT NULL,
                    time_ms BIGINT NOT NULL,
                    from_state TEXT,
                    to_state TEXT NOT NULL,
                    cause TEXT NOT NULL
                )
                """,
                "CREATE INDEX journal_by_guest ON journal (guest_id, sequence)",
            ]),
        Migration(identifier: "v2-accounts", statements: accountsV2),
        Migration(
            identifier: "v3-host-kvm",
            statements: ["ALTER TABLE hosts ADD COLUMN kvm BOOLEAN NOT NULL DEFAULT FALSE"]),
        Migration(
            identifier: "v4-guest-samples",
            statements: [
                """
                CREATE TABLE guest_samples (
                    guest_id TEXT NOT NULL,
                    time_ms BIGINT NOT NULL,
                    cpu_ns BIGINT NOT NULL CHECK (cpu_ns >= 0),
                    vcpus BIGINT NOT NULL CHECK (vcpus >= 1),
                    load_permille BIGINT CHECK (load_permille BETWEEN 0 AND 1000),
                    PRIMARY KEY (guest_id, time_ms)
                )
                """,
                "CREATE INDEX guest_samples_by_time ON guest_samples (time_ms)",
            ]),
        Migration(
            identifier: "v5-leases",
            statements: [
                """
                CREATE TABLE leases (
                    id TEXT PRIMARY KEY NOT NULL,
                    project TEXT NOT NULL REFERENCES projects (name),
                    flavor TEXT NOT NULL,
                    count BIGINT NOT NULL CHECK (count >= 1),
                    vcpus BIGINT NOT NULL, memory_bytes BIGINT NOT NULL, disk_bytes BIGINT NOT NULL,
                    start_ms BIGINT NOT NULL,
                    end_ms BIGINT NOT NULL CHECK (end_ms > start_ms),
                    at_end TEXT NOT NULL CHECK (at_end IN ('stop', 'suspend', 'extend')),
                    state TEXT NOT NULL CHECK (state IN ('admitted', 'cancelled')),
                    created_ms BIGINT NOT NULL
                )
                """,
                "CREATE INDEX leases_by_end ON leases (state, end_ms)",
                "CREATE INDEX leases_by_project ON leases (project, start_ms)",
            ]),
        // The host a guest is being live-migrated to (NULL: not moving), as ControlSchema.guestMovesV6.
        Migration(
            identifier: "v6-guest-moves",
            statements: ["ALTER TABLE guests ADD COLUMN moving_to TEXT REFERENCES hosts (id)"]),
        Migration(identifier: "v7-lease-pools", statements: leasePoolsV7),
        Migration(identifier: "v8-scaling-groups", statements: scalingGroupsV8),
        // A group's warm capacity, as ControlSchema.warmCapacityV9.
        Migration(
            identifier: "v9-warm-capacity",
            statements: ["ALTER TABLE scaling_groups ADD COLUMN warm INTEGER NOT NULL DEFAULT 0 CHECK (warm >= 0)"]),
        // A host's mode, as ControlSchema.hostModesV10.
        Migration(
            identifier: "v10-host-modes",
            statements: [
                """
                ALTER TABLE hosts ADD COLUMN mode TEXT NOT NULL DEFAULT 'active'
                    CHECK (mode IN ('active', 'draining', 'drained'))
                """,
                "ALTER TABLE hosts ADD COLUMN mode_since_ms BIGINT",
                "ALTER TABLE hosts ADD COLUMN mode_cause TEXT NOT NULL DEFAULT ''",
            ]),
        // Each host's health reason, evacuation deadline and quarantine time, as ControlSchema.hostHealthV11.
        Migration(
            identifier: "v11-host-health",
            statements: [
                "ALTER TABLE hosts ADD COLUMN health_reason TEXT NOT NULL DEFAULT ''",
                "ALTER TABLE hosts ADD COLUMN evacuate_by_ms BIGINT",
                "ALTER TABLE hosts ADD COLUMN quarantined_ms BIGINT",
            ]),
        // A host's power and when it last changed, as ControlSchema.hostPowerV12.
        Migration(
            identifier: "v12-host-power",
            statements: [
                """
                ALTER TABLE hosts ADD COLUMN power TEXT NOT NULL DEFAULT 'on'
                    CHECK (power IN ('on', 'standby', 'waking'))
                """,
                "ALTER TABLE hosts ADD COLUMN power_since_ms BIGINT",
            ]),
        // Each guest's migration policy, as ControlSchema.migrationPolicyV13.
        Migration(
            identifier: "v13-migration-policy",
            statements: [
                """
                ALTER TABLE guests ADD COLUMN migration_policy TEXT NOT NULL DEFAULT 'live_only'
                    CHECK (migration_policy IN ('live_only', 'live_then_cold'))
                """
            ]),
    ]

    /// Leases delivered into private pools (ControlSchema.leasePoolsV7).
    static let leasePoolsV7 = [
        "ALTER TABLE leases ADD COLUMN image TEXT",
        """
        ALTER TABLE leases ADD COLUMN phase TEXT NOT NULL DEFAULT 'waiting'
            CHECK (phase IN ('waiting', 'delivering', 'active', 'short', 'ended'))
        """,
        "ALTER TABLE leases ADD COLUMN delivered_ms BIGINT",
        "ALTER TABLE leases ADD COLUMN ended_ms BIGINT",
        "ALTER TABLE leases ADD COLUMN short_units BIGINT NOT NULL DEFAULT 0 CHECK (short_units >= 0)",
        "ALTER TABLE leases ADD COLUMN short_ms BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE leases ADD COLUMN short_since_ms BIGINT",
        "ALTER TABLE leases ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX leases_by_phase ON leases (state, phase, start_ms)",
        """
        CREATE TABLE lease_slots (
            lease_id TEXT NOT NULL REFERENCES leases (id),
            host TEXT NOT NULL REFERENCES hosts (id),
            units BIGINT NOT NULL CHECK (units >= 1),
            PRIMARY KEY (lease_id, host)
        )
        """,
        "ALTER TABLE guests ADD COLUMN lease_id TEXT REFERENCES leases (id)",
        "CREATE INDEX guests_by_lease ON guests (lease_id) WHERE lease_id IS NOT NULL",
    ]

    /// Auto-scaling groups, their actions and each guest's group (ControlSchema.scalingGroupsV8).
    static let scalingGroupsV8 = [
        """
        CREATE TABLE scaling_groups (
            id TEXT PRIMARY KEY NOT NULL,
            project TEXT NOT NULL REFERENCES projects (name),
            name TEXT NOT NULL,
            flavor TEXT NOT NULL,
            image TEXT NOT NULL,
            min_size BIGINT NOT NULL CHECK (min_size >= 0),
            max_size BIGINT NOT NULL CHECK (max_size >= min_size),
            desired BIGINT NOT NULL CHECK (desired >= 0 AND desired <= max_size),
            policy TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            last_action_ms BIGINT,
            state TEXT NOT NULL CHECK (state IN ('active', 'deleted'))
        )
        """,
        "CREATE UNIQUE INDEX scaling_groups_by_name ON scaling_groups (project, name) WHERE state = 'active'",
        """
        CREATE TABLE scaling_actions (
            sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            group_id TEXT NOT NULL REFERENCES scaling_groups (id),
            time_ms BIGINT NOT NULL,
            from_desired BIGINT NOT NULL,
            to_desired BIGINT NOT NULL,
            reason TEXT NOT NULL
        )
        """,
        "CREATE INDEX scaling_actions_by_group ON scaling_actions (group_id, sequence)",
        "ALTER TABLE guests ADD COLUMN scaling_group TEXT REFERENCES scaling_groups (id)",
        "CREATE INDEX guests_by_scaling_group ON guests (scaling_group) WHERE scaling_group IS NOT NULL",
    ]

    /// Users, memberships, sessions, API tokens and failed logins (ControlSchema.accountsV2).
    /// Sessions and API tokens are kept by the SHA-256 of their secret, never the secret.
    static let accountsV2 = [
        """
        CREATE TABLE users (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT NOT NULL,
            site_admin BOOLEAN NOT NULL,
            created_ms BIGINT NOT NULL
        )
        """,
        """
        CREATE TABLE memberships (
            user_name TEXT NOT NULL REFERENCES users (name),
            project TEXT NOT NULL REFERENCES projects (name),
            role TEXT NOT NULL CHECK (role IN ('member', 'admin')),
            PRIMARY KEY (user_name, project)
        )
        """,
        "CREATE INDEX memberships_by_project ON memberships (project)",
        """
        CREATE TABLE sessions (
            token_sha256 TEXT PRIMARY KEY NOT NULL CHECK (length(token_sha256) = 64),
            user_name TEXT NOT NULL REFERENCES users (name),
            csrf_token TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL
        )
        """,
        "CREATE INDEX sessions_by_expiry ON sessions (expires_ms)",
        """
        CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY NOT NULL,
            secret_sha256 TEXT NOT NULL UNIQUE CHECK (length(secret_sha256) = 64),
            user_name TEXT NOT NULL REFERENCES users (name),
            label TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            last_used_ms BIGINT
        )
        """,
        "CREATE INDEX api_tokens_by_user ON api_tokens (user_name)",
        """
        CREATE TABLE login_failures (
            name TEXT PRIMARY KEY NOT NULL,
            consecutive BIGINT NOT NULL CHECK (consecutive >= 0),
            last_failure_ms BIGINT NOT NULL
        )
        """,
    ]

    /// The key of the advisory lock the migrations run under ("FerrySch").
    static let migrationLockKey: Int64 = 0x4665_7272_7953_6368

    /// Checks the server and the database on one connection and applies the migrations it lacks,
    /// all in one transaction.
    static func migrate(_ settings: PostgresSettings, logger: Logger) async throws(ControlError) {
        let url = settings.url
        let applied = try await settings.withConnection(logger: logger, doing: "migrate the schema of") { connection in
            try await connection.query("BEGIN", logger: logger)
            do {
                let applied = try await apply(connection, url: url, logger: logger)
                try await connection.query("COMMIT", logger: logger)
                return applied
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
        if !applied.isEmpty {
            logger.info(
                "control store migrated",
                metadata: ["control.database": "\(url)", "control.migrations": "\(applied.joined(separator: ", "))"])
        }
    }

    /// Inside the transaction: the lock, the migrations table, the check, the missing migrations.
    private static func apply(_ connection: PostgresConnection, url: PostgresURL, logger: Logger) async throws
        -> [String]
    {
        try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLockKey))", logger: logger)
        try await connection.query(
            "CREATE TABLE IF NOT EXISTS ferry_control_migrations (identifier TEXT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            logger: logger)
        var done: Set<String> = []
        for try await identifier in try await connection.query(
            "SELECT identifier FROM ferry_control_migrations", logger: logger
        ).decode(String.self) {
            done.insert(identifier)
        }
        let known = Set(migrations.map(\.identifier))
        guard done.isSubset(of: known) else {
            let unknown = done.subtracting(known).sorted().joined(separator: ", ")
            throw ControlError(
                .unusableDatabase,
                "control store \(url) was written by a newer Ferry (its schema has migrations this one does not"
                    + " know: \(unknown)): run that Ferry's controller, or restore a backup made by this one")
        }
        var applied: [String] = []
        for migration in migrations where !done.contains(migration.identifier) {
            for statement in migration.statements {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P07" {
                    throw ControlError(
                        .unusableDatabase,
                        "database \(url.database) at \(url.host):\(url.port) already has a table Ferry did not create"
                            + " (\(error.serverInfo?[.message] ?? "")): give the controller a database of its own",
                        cause: PostgresServerError(error))
                }
            }
            let now = PostgresRows.milliseconds(Date())
            try await connection.query(
                "INSERT INTO ferry_control_migrations (identifier, applied_ms) VALUES (\(migration.identifier), \(now))",
                logger: logger)
            applied.append(migration.identifier)
        }
        return applied
    }
}
