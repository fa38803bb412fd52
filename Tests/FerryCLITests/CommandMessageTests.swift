import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

/// Issue 13, item 5: a bad value is a usage error naming its option, a failure before any guest
/// ran carries no "where the guest is" trailer, and a destination refuses at start what would
/// only fail once a source arrived.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct CommandMessageTests {
    static let trailers = ["(no guest runs here", "(the guest keeps running", "(the guest runs on"]

    static func expectNoTrailer(_ outcome: FerryProcess.Outcome, sourceLocation: SourceLocation = #_sourceLocation) {
        for trailer in trailers {
            #expect(!outcome.stderr.contains(trailer), "\(outcome.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: [
        (["send", "--image", "/dev/null", "--to", "127.0.0.1"], "--to '127.0.0.1'", "expected HOST:PORT"),
        (["send", "--image", "/dev/null", "--to", "host:99999"], "--to 'host:99999'", "0 to 65535"),
        (["status", "--connect", "nohost"], "--connect 'nohost'", "expected HOST:PORT"),
        (["receive", "--image", "/tmp/x.img", "--listen", "1.2.3.4"], "--listen '1.2.3.4'", "expected HOST:PORT"),
        (
            ["send", "--image", "/dev/null", "--to", ":1", "--max-bandwidth", "100mb/s"],
            "is invalid for '--max-bandwidth <", "write MB/s for 10^6 bytes or Mbit/s"
        ),
    ])
    func badValuesNameTheOption(arguments: [String], option: String, reason: String) throws {
        let outcome = try FerryProcess.run(arguments, timeout: 30)
        #expect(outcome.status == 2, "\(outcome.stderr)")
        #expect(outcome.stderr.contains(option), "\(outcome.stderr)")
        #expect(outcome.stderr.contains(reason), "\(outcome.stderr)")
    }

    /// `--listen :0`, `--to 7700` and `--to :7700` mean this host: a migration goes through.
    @Test(arguments: ["", ":"])
    func aPortAloneIsThisHost(prefix: String) throws {
        let scratch = Scratch("port-alone")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "1M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "\(prefix)0", "--image", scratch.file("in.img"), "--accept-timeout", "30s", "-q",
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on 127.0.0.1:"))
        let port = try #require(
            listening.split(separator: ":").last.flatMap { Int($0.split(separator: ",").first ?? "") })
        let sent = try FerryProcess.run(["send", "--image", image, "--to", "\(prefix)\(port)", "-q"], timeout: 60)
        let received = receiver.wait(timeout: 30)
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
    }

    /// A `--max-bandwidth` in bits caps the stream at an eighth of the number in bytes.
    @Test func bandwidthInBitsIsAnEighthInBytes() throws {
        let scratch = Scratch("bits")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "8M", "--mix", "random=100"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--accept-timeout", "30s", "-q",
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let port = try #require(
            listening.split(separator: ":").last.flatMap { Int($0.split(separator: ",").first ?? "") })
        let started = Date()
        let sent = try FerryProcess.run(
            [
                "send", "--image", image, "--to", "127.0.0.1:\(port)", "--max-bandwidth", "64Mbit/s", "--compress",
                "none", "-q",
            ], timeout: 60)
        let seconds = Date().timeIntervalSince(started)
        _ = receiver.wait(timeout: 10)
        #expect(sent.status == 0, "\(sent.stderr)")
        // 8 MiB of random pages at 8 MB/s: about a second; at 64 MB/s (bytes) it would take 0.13 s.
        #expect(seconds > 0.8, "took \(seconds) s: the cap was not read as 64 megabits per second")
    }

    @Test func aMissingImageNamesTheOption() throws {
        for command in [["send", "--to", "127.0.0.1:1"], ["run", "--steps", "10"]] {
            let outcome = try FerryProcess.run(command + ["--image", "/nonexistent/vm.img"], timeout: 30)
            #expect(outcome.status == 9, "\(command[0]): \(outcome.stderr)")
            #expect(outcome.stderr.contains("--image /nonexistent/vm.img: no such file"), "\(outcome.stderr)")
            #expect(outcome.stderr.contains("ferry image create"), "\(outcome.stderr)")
            Self.expectNoTrailer(outcome)
        }
    }

    @Test func keygenAndStatusFailuresCarryNoGuestTrailer() throws {
        let keygen = try FerryProcess.run(["keygen", "--out", "/nonexistent/dir/key"], timeout: 30)
        #expect(keygen.status == 9, "\(keygen.stderr)")
        #expect(keygen.stderr.contains("/nonexistent/dir/key"), "\(keygen.stderr)")
        Self.expectNoTrailer(keygen)
        let status = try FerryProcess.run(["status", "--connect", "127.0.0.1:1"], timeout: 30)
        #expect(status.status == 5, "\(status.stderr)")
        Self.expectNoTrailer(status)
        let cipher = try FerryProcess.run(
            ["send", "--image", "/dev/null", "--to", "127.0.0.1:1", "--encrypt", "--cipher", "rot13"], timeout: 30)
        #expect(cipher.status != 0, "\(cipher.stderr)")
        Self.expectNoTrailer(cipher)
    }

    /// The destination checks where its images go before it listens.
    @Test func receiveRefusesAnUnusableDirectoryBeforeListening() throws {
        let scratch = Scratch("receive-dir")
        let file = scratch.file("plain-file")
        _ = FileManager.default.createFile(atPath: file, contents: Data([1]))
        for (arguments, fragment) in [
            (["--image", "/nonexistent/dir/a.img"], "--image /nonexistent/dir/a.img: the directory /nonexistent/dir"),
            (["--image", "\(file)/a.img"], "is not a directory"),
            (["--serve", "/nonexistent/dir"], "--serve /nonexistent/dir"),
        ] {
            let outcome = try FerryProcess.run(
                ["receive", "--listen", "127.0.0.1:0", "--accept-timeout", "5s"] + arguments, timeout: 30)
            #expect(outcome.status == 9, "\(arguments): \(outcome.stderr)")
            #expect(outcome.stderr.contains(fragment), "\(outcome.stderr)")
            #expect(!outcome.stderr.contains("listening on"), "\(outcome.stderr)")
        }
    }

    /// A source that cannot reach its destination tells one story: the guest ran until the
    /// failure and was then stopped cleanly, not "stopped" and then "keeps running".
    @Test func aFailedSendTellsOneStory() throws {
        let scratch = Scratch("one-story")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "4M"]).status == 0)
        let outcome = try FerryProcess.run(["send", "--image", image, "--to", "127.0.0.1:1"], timeout: 30)
        #expect(outcome.status == 5, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("was stopped cleanly after"), "\(outcome.stderr)")
        #expect(!outcome.stderr.contains("keeps running"), "\(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n").filter { $0.hasPrefix("ferry:") }
        #expect(lines.count == 1, "\(outcome.stderr)")
    }

    /// `ferry send --help` groups its thirty-odd options by what they are about.
    @Test func sendHelpIsGrouped() throws {
        let help = try FerryProcess.run(["send", "--help"], timeout: 30)
        #expect(help.status == 0)
        var last = help.stdout.startIndex
        for section in ["GUEST:", "CONVERGENCE:", "TRANSFER:", "FAULTS AND TIMEOUTS:", "SECURITY:", "OUTPUT:"] {
            let found = try #require(help.stdout.range(of: "\n\(section)\n"), "no \(section) in \(help.stdout)")
            #expect(found.lowerBound > last, "\(section) out of order")
            last = found.lowerBound
        }
        let convergence = try #require(help.stdout.range(of: "CONVERGENCE:"))
        let transfer = try #require(help.stdout.range(of: "TRANSFER:"))
        #expect(help.stdout[convergence.upperBound..<transfer.lowerBound].contains("--downtime-ms"))
    }

    @Test func receiveHelpIsGrouped() throws {
        let help = try FerryProcess.run(["receive", "--help"], timeout: 30)
        #expect(help.status == 0)
        for section in ["SERVING SEVERAL GUESTS:", "THE GUEST AFTER ITS RESUME:", "TIMEOUTS:", "SECURITY:", "OUTPUT:"] {
            #expect(help.stdout.contains("\n\(section)\n"), "no \(section) in \(help.stdout)")
        }
    }
}
