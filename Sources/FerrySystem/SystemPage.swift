import Glibc

/// The size of a virtual memory page on this machine (4096 on x86-64 Linux).
public let systemPageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))
