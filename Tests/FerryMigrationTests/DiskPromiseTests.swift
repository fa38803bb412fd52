import FerryGuestMigration
import FerryKVMMigration
import Testing

@testable import FerryMigration

@Suite struct DiskPromiseTests {
    /// Two migrations admitted before either allocated its image are not promised the same free
    /// bytes; a promise given back (image allocated, or migration over) frees them again.
    @Test func freeBytesArePromisedOnce() throws {
        let registry = SessionRegistry(maxSessions: 4)
        let free: UInt64 = 44 << 20
        let first = try #require(registry.promiseDisk(32 << 20) { free })
        #expect(first.promised && first.promisedToOthers == 0)
        let second = try #require(registry.promiseDisk(32 << 20) { free })
        #expect(!second.promised && second.free == free && second.promisedToOthers == 32 << 20)
        #expect(try #require(registry.promiseDisk(12 << 20) { free }).promised, "12 MiB still fit")
        registry.releaseDisk(32 << 20)
        registry.releaseDisk(12 << 20)
        #expect(try #require(registry.promiseDisk(32 << 20) { free }).promised)
        // Free space that cannot be measured refuses nothing (as before the promises).
        #expect(registry.promiseDisk(1 << 40) { throw DiskPromiseTestError() } == nil)
    }

    struct DiskPromiseTestError: Error {}
}
