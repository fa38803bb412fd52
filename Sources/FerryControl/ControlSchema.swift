import GRDB

/// The controller's tables, as versioned migrations (GRDB's `DatabaseMigrator`). Never edit a
/// migration that has shipped; add the next one. Times are Unix milliseconds.
enum ControlSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-cluster") { db in
            try db.execute(
                sql: """
                    CREATE TABLE hosts (
                        id TEXT PRIMARY KEY NOT NULL,
                        address TEXT NOT NULL,
                        vcpus INTEGER NOT NULL CHECK (vcpus >= 0),
                        memory_bytes INTEGER NOT NULL CHECK (memory_bytes >= 0),
                        disk_bytes INTEGER NOT NULL CHECK (disk_bytes >= 0),
                        health TEXT NOT NULL,
                        last_heartbeat_ms INTEGER NOT NULL,
                        registered_ms INTEGER NOT NULL
                    ) STRICT;
                    CREATE TABLE flavors (
                        name TEXT PRIMARY KEY NOT NULL,
                        vcpus INTEGER NOT NULL, memory_bytes INTEGER NOT NULL, disk_bytes INTEGER NOT NULL,
                        price_per_second_micros INTEGER NOT NULL
                    ) STRICT;
                    CREATE TABLE images (
                        name TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, disk_template_path TEXT NOT NULL
                    ) STRICT;
                    CREATE TABLE projects (
                        name TEXT PRIMARY KEY NOT NULL,
                        quota_guests INTEGER NOT NULL, quota_vcpus INTEGER NOT NULL,
                        quota_memory_bytes INTEGER NOT NULL, quota_disk_bytes INTEGER NOT NULL
                    ) STRICT;
                    CREATE TABLE guests (
                        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32),
                        project TEXT NOT NULL REFERENCES projects (name),
                        name TEXT NOT NULL,
                        flavor TEXT NOT NULL,
                        image TEXT NOT NULL,
                        vcpus INTEGER NOT NULL, memory_bytes INTEGER NOT NULL, disk_bytes INTEGER NOT NULL,
                        price_per_second_micros INTEGER NOT NULL,
                        image_kind TEXT NOT NULL,
                        disk_template_path TEXT NOT NULL,
                        host TEXT NOT NULL REFERENCES hosts (id),
                        state TEXT NOT NULL,
                        error_reason TEXT,
                        client_token TEXT,
                        generation INTEGER NOT NULL CHECK (generation >= 1),
                        created_ms INTEGER NOT NULL,
                        state_since_ms INTEGER NOT NULL
                    ) STRICT;
                    CREATE UNIQUE INDEX guests_by_token ON guests (project, client_token)
                        WHERE client_token IS NOT NULL;
                    CREATE INDEX guests_by_host ON guests (host, state);
                    CREATE INDEX guests_by_project ON guests (project, state);
                    CREATE TABLE journal (
                        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                        guest_id TEXT NOT NULL,
                        time_ms INTEGER NOT NULL,
                        from_state TEXT,
                        to_state TEXT NOT NULL,
                        cause TEXT NOT NULL
                    );
                    CREATE INDEX journal_by_guest ON journal (guest_id, sequence);
                    """)
        }
        migrator.registerMigration("v2-accounts") { db in try db.execute(sql: accountsV2) }
        migrator.registerMigration("v3-host-kvm") { db in try db.execute(sql: hostKVMV3) }
        migrator.registerMigration("v4-guest-samples") { db in try db.execute(sql: guestSamplesV4) }
        migrator.registerMigration("v5-leases") { db in try db.execute(sql: leasesV5) }
        migrator.registerMigration("v6-guest-moves") { db in try db.execute(sql: guestMovesV6) }
        migrator.registerMigration("v7-lease-pools") { db in try db.execute(sql: leasePoolsV7) }
        migrator.registerMigration("v8-scaling-groups") { db in try db.execute(sql: scalingGroupsV8) }
        migrator.registerMigration("v9-warm-capacity") { db in try db.execute(sql: warmCapacityV9) }
        migrator.registerMigration("v10-host-modes") { db in try db.execute(sql: hostModesV10) }
        migrator.registerMigration("v11-host-health") { db in try db.execute(sql: hostHealthV11) }
        migrator.registerMigration("v12-host-power") { db in try db.execute(sql: hostPowerV12) }
        migrator.registerMigration("v13-migration-policy") { db in try db.execute(sql: migrationPolicyV13) }
        return migrator
    }

    /// Each running guest's telemetry as its host's heartbeats brought it (one row per guest and
    /// millisecond; a few minutes are kept: `pruneSamples`).
    static let guestSamplesV4 = """
        CREATE TABLE guest_samples (
            guest_id TEXT NOT NULL,
            time_ms INTEGER NOT NULL,
            cpu_ns INTEGER NOT NULL CHECK (cpu_ns >= 0),
            vcpus INTEGER NOT NULL CHECK (vcpus >= 1),
            load_permille INTEGER CHECK (load_permille BETWEEN 0 AND 1000),
            PRIMARY KEY (guest_id, time_ms)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX guest_samples_by_time ON guest_samples (time_ms);
        """

    /// Leases (reservations of capacity for a window); the unit is the flavor's resources when
    /// admitted.
    static let leasesV5 = """
        CREATE TABLE leases (
            id TEXT PRIMARY KEY NOT NULL,
            project TEXT NOT NULL REFERENCES projects (name),
            flavor TEXT NOT NULL,
            count INTEGER NOT NULL CHECK (count >= 1),
            vcpus INTEGER NOT NULL, memory_bytes INTEGER NOT NULL, disk_bytes INTEGER NOT NULL,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL CHECK (end_ms > start_ms),
            at_end TEXT NOT NULL CHECK (at_end IN ('stop', 'suspend', 'extend')),
            state TEXT NOT NULL CHECK (state IN ('admitted', 'cancelled')),
            created_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX leases_by_end ON leases (state, end_ms);
        CREATE INDEX leases_by_project ON leases (project, start_ms);
        """

    /// The host a guest is being live-migrated to (NULL: not moving); while it is set the guest
    /// holds its resources on both hosts.
    static let guestMovesV6 = """
        ALTER TABLE guests ADD COLUMN moving_to TEXT REFERENCES hosts (id);
        """

    /// Auto-scaling groups, the journal of their desired counts (`scaling_actions`, the group's
    /// timeline) and, on each guest, the group it belongs to (NULL: none). A group's name is
    /// unique among the project's active groups.
    static let scalingGroupsV8 = """
        CREATE TABLE scaling_groups (
            id TEXT PRIMARY KEY NOT NULL,
            project TEXT NOT NULL REFERENCES projects (name),
            name TEXT NOT NULL,
            flavor TEXT NOT NULL,
            image TEXT NOT NULL,
            min_size INTEGER NOT NULL CHECK (min_size >= 0),
            max_size INTEGER NOT NULL CHECK (max_size >= min_size),
            desired INTEGER NOT NULL CHECK (desired >= 0 AND desired <= max_size),
            policy TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            last_action_ms INTEGER,
            state TEXT NOT NULL CHECK (state IN ('active', 'deleted'))
        ) STRICT;
        CREATE UNIQUE INDEX scaling_groups_by_name ON scaling_groups (project, name) WHERE state = 'active';
        CREATE TABLE scaling_actions (
            sequence INTEGER PRIMARY KEY AUTOINCREMENT,
            group_id TEXT NOT NULL REFERENCES scaling_groups (id),
            time_ms INTEGER NOT NULL,
            from_desired INTEGER NOT NULL,
            to_desired INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX scaling_actions_by_group ON scaling_actions (group_id, sequence);
        ALTER TABLE guests ADD COLUMN scaling_group TEXT REFERENCES scaling_groups (id);
        CREATE INDEX guests_by_scaling_group ON guests (scaling_group) WHERE scaling_group IS NOT NULL;
        """

    /// Users, memberships, sessions, API tokens and failed logins. Sessions and API tokens are
    /// kept by the SHA-256 of their secret (64 hex digits), never the secret.
    static let accountsV2 = """
        CREATE TABLE users (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT NOT NULL,
            site_admin INTEGER NOT NULL CHECK (site_admin IN (0, 1)),
            created_ms INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE memberships (
            user_name TEXT NOT NULL REFERENCES users (name),
            project TEXT NOT NULL REFERENCES projects (name),
            role TEXT NOT NULL CHECK (role IN ('member', 'admin')),
            PRIMARY KEY (user_name, project)
        ) STRICT;
        CREATE INDEX memberships_by_project ON memberships (project);
        CREATE TABLE sessions (
            token_sha256 TEXT PRIMARY KEY NOT NULL CHECK (length(token_sha256) = 64),
            user_name TEXT NOT NULL REFERENCES users (name),
            csrf_token TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX sessions_by_expiry ON sessions (expires_ms);
        CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY NOT NULL,
            secret_sha256 TEXT NOT NULL UNIQUE CHECK (length(secret_sha256) = 64),
            user_name TEXT NOT NULL REFERENCES users (name),
            label TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            last_used_ms INTEGER
        ) STRICT;
        CREATE INDEX api_tokens_by_user ON api_tokens (user_name);
        CREATE TABLE login_failures (
            name TEXT PRIMARY KEY NOT NULL,
            consecutive INTEGER NOT NULL CHECK (consecutive >= 0),
            last_failure_ms INTEGER NOT NULL
        ) STRICT;
        """

    /// Whether each host's agent reports a usable /dev/kvm (the scheduler places guests of `kvm`
    /// images only there). Hosts registered before read false until their next heartbeat.
    static let hostKVMV3 = """
        ALTER TABLE hosts ADD COLUMN kvm INTEGER NOT NULL DEFAULT 0 CHECK (kvm IN (0, 1));
        """

    /// Leases delivered into private pools: their phase and SLA record, the units they set aside
    /// per host, and the lease a guest of a pool belongs to.
    static let leasePoolsV7 = """
        ALTER TABLE leases ADD COLUMN image TEXT;
        ALTER TABLE leases ADD COLUMN phase TEXT NOT NULL DEFAULT 'waiting'
            CHECK (phase IN ('waiting', 'delivering', 'active', 'short', 'ended'));
        ALTER TABLE leases ADD COLUMN delivered_ms INTEGER;
        ALTER TABLE leases ADD COLUMN ended_ms INTEGER;
        ALTER TABLE leases ADD COLUMN short_units INTEGER NOT NULL DEFAULT 0 CHECK (short_units >= 0);
        ALTER TABLE leases ADD COLUMN short_ms INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE leases ADD COLUMN short_since_ms INTEGER;
        ALTER TABLE leases ADD COLUMN note TEXT NOT NULL DEFAULT '';
        CREATE INDEX leases_by_phase ON leases (state, phase, start_ms);
        CREATE TABLE lease_slots (
            lease_id TEXT NOT NULL REFERENCES leases (id),
            host TEXT NOT NULL REFERENCES hosts (id),
            units INTEGER NOT NULL CHECK (units >= 1),
            PRIMARY KEY (lease_id, host)
        ) STRICT;
        ALTER TABLE guests ADD COLUMN lease_id TEXT REFERENCES leases (id);
        CREATE INDEX guests_by_lease ON guests (lease_id) WHERE lease_id IS NOT NULL;
        """

    /// A group's warm capacity: suspended members kept ready beyond the desired running ones.
    static let warmCapacityV9 = """
        ALTER TABLE scaling_groups ADD COLUMN warm INTEGER NOT NULL DEFAULT 0 CHECK (warm >= 0);
        """

    /// A host's mode (`HostMode`: active, draining, drained), when it changed and why.
    static let hostModesV10 = """
        ALTER TABLE hosts ADD COLUMN mode TEXT NOT NULL DEFAULT 'active'
            CHECK (mode IN ('active', 'draining', 'drained'));
        ALTER TABLE hosts ADD COLUMN mode_since_ms INTEGER;
        ALTER TABLE hosts ADD COLUMN mode_cause TEXT NOT NULL DEFAULT '';
        """

    /// What each host's agent said is wrong (empty when healthy) and, while it is failing
    /// (quarantined), when its guests should be gone and when it turned failing.
    static let hostHealthV11 = """
        ALTER TABLE hosts ADD COLUMN health_reason TEXT NOT NULL DEFAULT '';
        ALTER TABLE hosts ADD COLUMN evacuate_by_ms INTEGER;
        ALTER TABLE hosts ADD COLUMN quarantined_ms INTEGER;
        """

    /// A host's power (`HostPower`: on, standby, waking) and when it last changed.
    static let hostPowerV12 = """
        ALTER TABLE hosts ADD COLUMN power TEXT NOT NULL DEFAULT 'on'
            CHECK (power IN ('on', 'standby', 'waking'));
        ALTER TABLE hosts ADD COLUMN power_since_ms INTEGER;
        """

    /// How each guest may be moved off a host that is emptied (`MigrationPolicy`); guests created
    /// before read `live_only`.
    static let migrationPolicyV13 = """
        ALTER TABLE guests ADD COLUMN migration_policy TEXT NOT NULL DEFAULT 'live_only'
            CHECK (migration_policy IN ('live_only', 'live_then_cold'));
        """
}
