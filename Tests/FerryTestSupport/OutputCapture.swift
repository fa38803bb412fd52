import Foundation
import Glibc

/// The read end of a child's output: a pipe or a pseudo-terminal, drained by a thread of its own
/// (a child writing to a full pipe or pty would block) until end of file. `write` is the end to
/// hand to the child, and to close in the parent once the child has it.
public final class OutputCapture: @unchecked Sendable {
    /// The end the child writes to.
    public let write: FileHandle
    private let readDescriptor: Int32
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    private let finished = DispatchSemaphore(value: 0)

    /// A pipe.
    public static func pipe() throws -> OutputCapture {
        var fds: [Int32] = [0, 0]
        guard Glibc.pipe(&fds) == 0 else { throw CaptureError("pipe: errno \(errno)") }
        return OutputCapture(read: fds[0], write: fds[1])
    }

    /// A pseudo-terminal in raw mode (no newline translation: the bytes are what the child
    /// wrote): the child's end is a terminal for `isatty`.
    public static func terminal(columns: UInt16 = 200) throws -> OutputCapture {
        var master: Int32 = -1
        var slave: Int32 = -1
        var size = winsize(ws_row: 50, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        guard openpty(&master, &slave, nil, nil, &size) == 0 else { throw CaptureError("openpty: errno \(errno)") }
        var attributes = termios()
        if tcgetattr(slave, &attributes) == 0 {
            cfmakeraw(&attributes)
            _ = tcsetattr(slave, TCSANOW, &attributes)
        }
        return OutputCapture(read: master, write: slave)
    }

    private init(read: Int32, write: Int32) {
        readDescriptor = read
        self.write = FileHandle(fileDescriptor: write, closeOnDealloc: true)
        let thread = Thread { [self] in drain() }
        thread.name = "output-capture"
        thread.start()
    }

    /// Reads until end of file (a pipe whose writers all closed) or EIO (a pty whose slave is
    /// closed everywhere).
    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(readDescriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            lock.lock()
            bytes.append(contentsOf: buffer[0..<count])
            lock.unlock()
        }
        close(readDescriptor)
        finished.signal()
    }

    /// Closes the parent's copy of the child's end (after the child started), so that the
    /// reader sees the end when the child exits.
    public func closeWriteEnd() { try? write.close() }

    /// Everything read so far.
    public var text: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Waits (at most `timeout` seconds) for the end of the output, then returns all of it.
    public func finish(timeout: Double = 30) -> String {
        _ = finished.wait(timeout: .now() + timeout)
        return text
    }
}

public struct CaptureError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
