import Glibc

/// Unbuffered writes to stdout and stderr (write(2)), so results appear as each section ends.
enum Output {
    static func out(_ text: String) { write(all: text + "\n", to: 1) }
    static func error(_ text: String) { write(all: text + "\n", to: 2) }

    private static func write(all text: String, to fd: Int32) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                done += n
            }
        }
    }
}
