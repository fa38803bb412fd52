import FerryAgent
import FerryTestSupport
import FerryTransport
import Foundation
import Logging
import Testing

/// An agent served in this process on a free loopback port, over real sockets, in a scratch
/// state directory; no signal handlers (the test process's SIGTERM stays its own).
final class RunningAgent: Sendable {
    static let key = try! SharedKey(bytes: Array(40...71))
    let scratch: Scratch
    let agent: Agent
    let task: Task<Void, any Error>
    let endpoint: Endpoint

    init(_ name: String = #function, bodyLimitBytes: Int = 1 << 20) async throws {
        scratch = Scratch(name)
        let configuration = AgentConfiguration(
            stateDirectory: scratch.file("state"), listen: Endpoint(host: "127.0.0.1", port: 0), key: Self.key,
            version: "test", bodyLimitBytes: bodyLimitBytes, shutdownGrace: .seconds(5))
        let agent = try Agent(configuration: configuration, logger: Logger(label: "test.agent"))
        self.agent = agent
        task = Task { try await agent.run(signals: []) }
        // Generous: under the whole suite the cooperative pool can be busy for a while.
        let deadline = ContinuousClock.now + .seconds(60)
        while agent.boundAddress == nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        endpoint = try #require(agent.boundAddress, "the agent did not start listening")
    }

    var url: String { "http://\(endpoint)" }

    func client(key: SharedKey? = RunningAgent.key) throws -> AgentClient {
        // 60 s: under the whole suite, blocking tests elsewhere can hold the cooperative threads the
        // in-process agent's handlers need for seconds at a time.
        try AgentClient(url: url, key: key, timeoutMs: 60_000)
    }

    /// Stops the agent and waits for `run` to return.
    func stop() async throws {
        await agent.stop()
        try await task.value
    }
}

/// Runs a blocking client call on a thread of its own and awaits it, so that the test never holds
/// one of the few cooperative threads (2 on a 2-core machine) that the in-process agent's request
/// handlers need while it waits for their answer.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.start()
    }
}
