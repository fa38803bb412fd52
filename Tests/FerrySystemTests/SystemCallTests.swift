import FerrySystem
import Glibc
import Testing

/// `valueOrErrno`, the one wrapper of system calls, and the `Errno` it reports.
@Suite struct SystemCallTests {
    @Test func errnoIsNamedByItsSymbolAndTheLibraryText() {
        #expect(Errno.interrupted.description == "EINTR (Interrupted system call)")
        #expect(Errno(ENOENT).description == "ENOENT (No such file or directory)")
        #expect(Errno(EAGAIN) == .wouldBlock)
        #expect(Errno(4000).name == "errno 4000")
    }

    @Test func libcFailureNamesTheCallAndErrno() {
        let error = #expect(throws: SystemError.self) {
            try valueOrErrno("open(\"/nonexistent-ferry-dir/x\")") { open("/nonexistent-ferry-dir/x", O_RDONLY) }
        }
        #expect(error?.code == .syscall)
        #expect(error?.errno == .noSuchFileOrDirectory)
        #expect(error?.description == "open(\"/nonexistent-ferry-dir/x\"): ENOENT (No such file or directory)")
    }

    @Test func interruptedCallsAreRetriedUnlessAsked() throws {
        var calls = 0
        let value = try valueOrErrno("fake") { () -> Int32 in
            calls += 1
            if calls < 3 {
                errno = EINTR
                return -1
            }
            return 7
        }
        #expect(value == 7 && calls == 3)

        calls = 0
        let error = #expect(throws: SystemError.self) {
            try valueOrErrno("fake", retryOnInterrupt: false) { () -> Int32 in
                calls += 1
                errno = EINTR
                return -1
            }
        }
        #expect(error?.errno == .interrupted && calls == 1)
    }

    @Test func shimConventionReadsTheNegatedResult() throws {
        #expect(try valueOrErrno("shim", .negatedErrno) { Int32(5) } == 5)
        errno = 0
        let error = #expect(throws: SystemError.self) { try valueOrErrno("shim", .negatedErrno) { -EBUSY } }
        #expect(error?.errno == .busy)
        #expect(error?.description == "shim: EBUSY (Device or resource busy)")
        // A shim's -1 is -EPERM, not "look at errno".
        let eperm = #expect(throws: SystemError.self) { try valueOrErrno("shim", .negatedErrno) { Int32(-1) } }
        #expect(eperm?.errno == .notPermitted)
    }
}
