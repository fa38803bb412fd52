import FerryTestSupport
import Foundation
import Glibc
import Testing

/// `--key-file` and `--encrypt` as a user runs them: two processes, keys made by `ferry keygen`.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct KeyFileTests {
    /// A source with another key exits 3 saying the keys differ; the destination logs the refusal,
    /// keeps serving, and then receives an encrypted guest from a source with the right key.
    @Test func mismatchedKeyIsRefusedAndTheDestinationServesOn() throws {
        let scratch = Scratch("key-file")
        let guests = scratch.file("guests")
        try FileManager.default.createDirectory(atPath: guests, withIntermediateDirectories: true)
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M"]).status == 0)
        for key in ["a.key", "b.key"] {
            let made = try FerryProcess.run(["keygen", "--out", scratch.file(key)])
            #expect(made.status == 0, "\(made.stderr)")
        }
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--serve", guests, "--sessions", "1",
            "--key-file", scratch.file("a.key"),
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let afterHost = try #require(listening.range(of: "127.0.0.1:")).upperBound
        let port = try #require(Int(listening[afterHost...].prefix { $0.isNumber }))

        let wrong = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "-q", "--key-file", scratch.file("b.key"),
        ])
        #expect(wrong.status == 3, "\(wrong.stderr)")
        #expect(wrong.stderr.contains("the two --key-file keys differ"), "\(wrong.stderr)")
        let missing = try FerryProcess.run(["send", "--image", image, "--to", "127.0.0.1:\(port)", "-q"])
        #expect(missing.status == 3, "\(missing.stderr)")
        #expect(missing.stderr.contains("requires authentication"), "\(missing.stderr)")
        // `ferry status` authenticates like a source: refused without the key, answered with it.
        let statusWithout = try FerryProcess.run(["status", "--connect", "127.0.0.1:\(port)"])
        #expect(statusWithout.status == 3, "\(statusWithout.stderr)")
        #expect(statusWithout.stderr.contains("requires authentication"), "\(statusWithout.stderr)")
        let statusWith = try FerryProcess.run([
            "status", "--connect", "127.0.0.1:\(port)", "--key-file", scratch.file("a.key"),
        ])
        #expect(statusWith.status == 0, "\(statusWith.stderr)")
        #expect(statusWith.stdout.contains("unknown"), "\(statusWith.stdout)")  // nothing received yet

        let right = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "-q", "--key-file", scratch.file("a.key"),
            "--encrypt", "--json", scratch.file("send.json"),
        ])
        #expect(right.status == 0, "\(right.stderr)")
        #expect(right.stdout.contains("security     peer authenticated, encrypted with"), "\(right.stdout)")
        let served = receiver.wait()
        #expect(served.status == 0, "\(served.stderr)")
        #expect(served.stderr.contains("AUTH_PROOF did not verify: the keys differ"), "\(served.stderr)")
        #expect(try filesEqual(image, guests + "/vm.img"))
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch.file("send.json"))))
                as? [String: Any])
        #expect(json["authenticated"] as? Bool == true)
        #expect((json["encryption"] as? String)?.isEmpty == false && json["encryption"] as? String != "none")
    }

    @Test func keyFileOthersCanReadIsRefused() throws {
        let scratch = Scratch("key-mode")
        let key = scratch.file("open.key")
        #expect(try FerryProcess.run(["keygen", "--out", key]).status == 0)
        chmod(key, 0o644)
        let outcome = try FerryProcess.run([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("x.img"), "--key-file", key,
        ])
        #expect(outcome.status == 9)
        #expect(outcome.stderr.contains("chmod 600"), "\(outcome.stderr)")
        let noKey = try FerryProcess.run(["send", "--image", scratch.file("x.img"), "--to", "127.0.0.1:1", "--encrypt"])
        #expect(noKey.status == 2, "options that do not go together are a usage error")
        #expect(noKey.stderr.contains("--encrypt needs --key-file"), "\(noKey.stderr)")
    }
}
