// FerryMigration: placeholder until the module lands.
