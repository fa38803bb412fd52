import Foundation
import Logging

/// The control socket: accepts any number of clients, each on a thread of its own that reads one
/// request line at a time and writes its response line. A client that disconnects mid-request
/// changes nothing it did not already ask for; a line over `ControlProtocol.maxRequestBytes` is
/// answered `too_large` and the connection closed.
final class ControlServer: @unchecked Sendable {
    let listener: UnixListener
    private weak var monitor: VirtualMachineMonitor?

    init(path: String, monitor: VirtualMachineMonitor) throws(VMMError) {
        listener = try UnixListener(path: path)
        self.monitor = monitor
    }

    func start() {
        let thread = Thread { [self] in
            while let connection = listener.accept() {
                let client = Thread { [self] in serve(connection) }
                client.name = "ferry-vmm-client"
                client.start()
            }
        }
        thread.name = "ferry-vmm-accept"
        thread.start()
    }

    func close() { listener.close() }

    private func serve(_ connection: UnixLineConnection) {
        defer { monitor?.removeWatcher(connection) }
        while true {
            switch connection.readLine(maxLineBytes: ControlProtocol.maxRequestBytes) {
            case .closed:
                return
            case .tooLong:
                connection.writeLine(
                    ControlFailure(
                        .tooLarge,
                        "a request line is at most \(ControlProtocol.maxRequestBytes) bytes; this connection is closed"
                    ).response(id: .null))
                return
            case .line(let line):
                guard let monitor, !line.allSatisfy(\.isWhitespace) else { continue }
                let answer = monitor.handle(line, from: connection)
                connection.writeLine(answer.line)
                answer.after?()
            }
        }
    }
}

/// A response line, and what to do once it is written (exit, kill).
struct ControlAnswer {
    var line: String
    var after: (() -> Void)?
}
