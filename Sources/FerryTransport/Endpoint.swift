/// A TCP host and port as given on a command line: `127.0.0.1:7700`, `[::1]:7700`,
/// `localhost:7700`, `0.0.0.0:0` (port 0: any free port, for listeners).
public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; an IPv6 host goes in brackets. The error message quotes the input;
    /// a command line prefixes it with the option name (`--to 'foo': expected HOST:PORT ...`).
    public static func parse(_ text: String) throws(TransportError) -> Endpoint {
        let example = "e.g. 127.0.0.1:7700, [::1]:7700 or localhost:7700"
        func failure(_ problem: String) -> TransportError {
            TransportError(.address, "'\(text)': \(problem) (\(example))")
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw failure("missing ']' after the IPv6 address")
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw failure("expected HOST:PORT, with ':PORT' after ']'") }
            portText = rest.dropFirst()
            guard host.contains(":") else { throw failure("brackets are only for IPv6 addresses") }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw failure("expected HOST:PORT") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                throw failure("an IPv6 address needs brackets, as in [\(host)]:\(portText)")
            }
        }
        guard !host.isEmpty else { throw failure("expected HOST:PORT, the host is empty") }
        guard !host.contains(where: { $0 == " " || $0 == "/" || $0 == "[" || $0 == "]" }) else {
            throw failure("'\(host)' is not a host name or address")
        }
        guard !portText.isEmpty else { throw failure("expected HOST:PORT, the port is missing") }
        guard portText.allSatisfy({ $0.isASCII && $0.isNumber }), portText.count <= 5,
            let port = UInt16(portText)
        else {
            throw failure("port '\(portText)' is not a number from 0 to 65535")
        }
        return Endpoint(host: String(host), port: port)
    }

    /// Like `parse(_:)`, but a port alone (`7700` or `:7700`) means `defaultHost` at that port.
    public static func parse(_ text: String, defaultHost: String) throws(TransportError) -> Endpoint {
        let portOnly = text.hasPrefix(":") ? text.dropFirst() : Substring(text)
        if !portOnly.isEmpty, portOnly.allSatisfy({ $0.isASCII && $0.isNumber }) {
            return try parse(defaultHost.contains(":") ? "[\(defaultHost)]:\(portOnly)" : "\(defaultHost):\(portOnly)")
        }
        return try parse(text)
    }

    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
