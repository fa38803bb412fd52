import Testing
@testable import FerryMigration
