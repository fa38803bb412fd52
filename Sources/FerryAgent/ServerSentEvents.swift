/// One event of a `text/event-stream` (the migration resource's event stream).
public struct ServerSentEvent: Sendable, Equatable {
    /// `event:`; "message" when the event names none.
    public var event: String
    /// The `data:` lines joined by newlines.
    public var data: String
    /// `id:`, if the event (or one before it) set one.
    public var id: String?

    public init(event: String = "message", data: String, id: String? = nil) {
        self.event = event
        self.data = data
        self.id = id
    }

    /// The event as the server writes it (each data line prefixed, a blank line after).
    public var text: String {
        var out = ""
        if let id { out += "id: \(id)\n" }
        if event != "message" { out += "event: \(event)\n" }
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) { out += "data: \(line)\n" }
        return out + "\n"
    }
}

/// Builds events from the lines of a `text/event-stream`, as the HTML standard's parser does:
/// fields until a blank line dispatches, `:` lines are comments, an event without data is dropped.
public struct ServerSentEventParser: Sendable {
    private var event = ""
    private var data: [String] = []
    private var hasData = false
    private var lastID: String?

    public init() {}

    /// Takes one line (without its line ending); returns the event a blank line completes.
    public mutating func take(line: String) -> ServerSentEvent? {
        if line.isEmpty {
            defer {
                event = ""
                data = []
                hasData = false
            }
            guard hasData else { return nil }
            return ServerSentEvent(
                event: event.isEmpty ? "message" : event, data: data.joined(separator: "\n"), id: lastID)
        }
        if line.hasPrefix(":") { return nil }
        let field: Substring
        var value: Substring
        if let colon = line.firstIndex(of: ":") {
            field = line[..<colon]
            value = line[line.index(after: colon)...]
            if value.hasPrefix(" ") { value = value.dropFirst() }
        } else {
            field = Substring(line)
            value = ""
        }
        switch field {
        case "event": event = String(value)
        case "data":
            data.append(String(value))
            hasData = true
        case "id": if !value.contains("\0") { lastID = String(value) }
        default: break  // retry and unknown fields
        }
        return nil
    }
}
