import GRDB

/// The inventory's tables, as versioned migrations (GRDB's `DatabaseMigrator`: applied in
/// order, each once, recorded in `grdb_migrations`). Never edit a migration that has shipped;
/// add the next one.
enum InventorySchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-guests-and-journal") { db in
            // Times are Unix milliseconds (wall clock, for people; nothing compares them to decide).
            try db.execute(
                sql: """
                    CREATE TABLE guests (
                        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32),
                        name TEXT NOT NULL UNIQUE,
                        specification TEXT NOT NULL,
                        state TEXT NOT NULL,
                        state_since_ms INTEGER NOT NULL,
                        generation INTEGER NOT NULL CHECK (generation >= 1),
                        pid INTEGER,
                        process_start_time INTEGER,
                        control_socket TEXT,
                        created_ms INTEGER NOT NULL,
                        updated_ms INTEGER NOT NULL
                    ) STRICT;
                    CREATE TABLE journal (
                        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                        guest_id TEXT NOT NULL,
                        guest_name TEXT NOT NULL,
                        time_ms INTEGER NOT NULL,
                        from_state TEXT,
                        to_state TEXT NOT NULL,
                        cause TEXT NOT NULL
                    );
                    CREATE INDEX journal_by_guest_id ON journal (guest_id, sequence);
                    CREATE INDEX journal_by_guest_name ON journal (guest_name, sequence);
                    """)
        }
        migrator.registerMigration("v2-missing-disks") { db in
            // The disks reconciliation found missing, as a JSON array of disk names ('[]': none).
            try db.execute(sql: "ALTER TABLE guests ADD COLUMN missing_disks TEXT NOT NULL DEFAULT '[]'")
        }
        return migrator
    }
}
