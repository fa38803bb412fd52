import FerryTestSupport
import Foundation
import Testing

@testable import FerryGuest

@Suite struct ParseTests {
    @Test(arguments: [
        ("4096", 4096), ("1G", 1 << 30), ("512M", 512 << 20), ("2GiB", 2 << 30), ("1.5G", 3 << 29),
        ("64k", 64 << 10), ("1T", 1 << 40), ("8KiB", 8192), ("1GB", 1_000_000_000), ("100B", 100),
        (" 16M ", 16 << 20), ("0.5K", 512),
    ])
    func byteSizes(text: String, bytes: Int) throws {
        #expect(try parseByteSize(text) == bytes)
    }

    @Test func byteSizeErrorsNameTheTextAndTheForm() {
        for (text, fragment) in [
            ("", "expected a number"), ("abc", "expected a number"), ("1.2.3G", "expected a number"),
            ("-4K", "expected a number"), ("12X", "unknown unit 'X'"),
            ("1.1K", "not a whole number of bytes"), ("99999999999T", "too large"),
        ] {
            do {
                _ = try parseByteSize(text)
                Issue.record("'\(text)' parsed")
            } catch {
                #expect(error.code == .invalidSize)
                #expect(error.message.contains("'\(text)'"), "\(error.message)")
                #expect(error.message.contains(fragment), "\(error.message)")
            }
        }
    }

    @Test(arguments: [
        ("200MB/s", Rate(bytesPerSecond: 200e6)), ("1.5GB/s", Rate(bytesPerSecond: 1.5e9)),
        ("64MiB/s", Rate(bytesPerSecond: 64 * 1_048_576)), ("50000pages/s", Rate(pagesPerSecond: 50000)),
        ("10kB/s", Rate(bytesPerSecond: 10000)), ("1000B/s", Rate(bytesPerSecond: 1000)),
        ("0.5page/s", Rate(pagesPerSecond: 0.5)), ("3KiB/s", Rate(bytesPerSecond: 3072)),
        // Bits: a small b, or bit(s), as network links are rated.
        ("100Mb/s", Rate(bytesPerSecond: 12.5e6)), ("800Mbit/s", Rate(bytesPerSecond: 100e6)),
        ("1Gbit/s", Rate(bytesPerSecond: 125e6)), ("1Gb/s", Rate(bytesPerSecond: 125e6)),
        ("10kbit/s", Rate(bytesPerSecond: 1250)), ("64kb/s", Rate(bytesPerSecond: 8000)),
        ("8bit/s", Rate(bytesPerSecond: 1)), ("2.5Gbits/s", Rate(bytesPerSecond: 312.5e6)),
        ("1mB/s", Rate(bytesPerSecond: 1e6)),
    ])
    func rates(text: String, rate: Rate) throws {
        let parsed = try Rate.parse(text)
        #expect(parsed == rate)
        #expect(try Rate.parse(parsed.description) == parsed, "\(parsed.description)")
    }

    @Test func rateDescriptions() throws {
        #expect(try Rate.parse("1.5GB/s").description == "1500MB/s")
        #expect(try Rate.parse("64MiB/s").description == "64MiB/s")
        #expect(try Rate.parse("200MB/s").description == "200MB/s")
        #expect(Rate(bytesPerSecond: 1234.5).description == "1234.5B/s")
        #expect(try Rate.parse("40MB/s").pagesPerSecond(pageSize: 4096) == 40e6 / 4096)
        #expect(try Rate.parse("5pages/s").pagesPerSecond(pageSize: 4096) == 5)
        #expect(try Rate.parse("5pages/s").bytesPerSecond(pageSize: 4096) == 20480)
        #expect(try Rate.parse("1MB/s").bytesPerSecond(pageSize: 4096) == 1e6)
    }

    @Test func rateErrors() {
        for (text, fragment) in [
            ("200MB", "missing '/s'"), ("0MB/s", "not a positive number"), ("fastMB/s", "not a positive number"),
            ("200Mibit/s", "unknown unit 'Mibit'"), ("-1MB/s", "not a positive number"),
            ("100mb/s", "could mean bytes or bits: write MB/s for 10^6 bytes or Mbit/s"),
            ("1gb/s", "write GB/s for 10^9 bytes or Gbit/s"),
            ("9999999999999999GB/s", "more than 10^15 bytes/s"), ("999999999999pages/s", "10^11 pages/s"),
        ] {
            do {
                _ = try Rate.parse(text)
                Issue.record("'\(text)' parsed")
            } catch {
                #expect(error.code == .invalidRate)
                #expect(error.message.contains("rate '\(text)'"), "\(error.message)")
                #expect(error.message.contains(fragment), "\(error.message)")
                if !fragment.contains("could mean") && !fragment.contains("write GB/s") {
                    #expect(error.message.contains("e.g. 200MB/s"), "\(error.message)")
                }
            }
        }
    }

    @Test func mixes() throws {
        #expect(try ImageMix.parse("zero=35,sparse=10,text=30,random=25") == .standard)
        #expect(try ImageMix.parse("random=100") == ImageMix(zero: 0, sparse: 0, text: 0, random: 100))
        #expect(
            try ImageMix.parse("text=50%, zero=49.5,sparse=0.5")
                == ImageMix(zero: 49.5, sparse: 0.5, text: 50, random: 0))
        let odd = ImageMix(zero: 12.5, sparse: 0.25, text: 37.25, random: 50)
        #expect(try ImageMix.parse(odd.description) == odd)
        for (text, fragment) in [
            ("zero=50,text=40", "sum to 90"), ("zero=50,ones=50", "unknown page class 'ones'"),
            ("zero=50,zero=50", "given twice"), ("zero", "not class=percent"),
            ("zero=abc,random=100", "'abc' for 'zero'"), ("zero=150,random=-50", "'150' for 'zero'"),
        ] {
            do {
                _ = try ImageMix.parse(text)
                Issue.record("'\(text)' parsed")
            } catch {
                #expect(error.code == .invalidMix)
                #expect(error.message.contains("mix '\(text)'"), "\(error.message)")
                #expect(error.message.contains(fragment), "\(error.message)")
                #expect(error.message.contains("zero=35,sparse=10,text=30,random=25"), "\(error.message)")
            }
        }
    }

    @Test func workloadSpecsRoundTrip() throws {
        let cases: [(String, WorkloadSpec)] = [
            ("idle", .idle),
            ("uniform:200MB/s", .uniform(Rate(bytesPerSecond: 200e6))),
            ("hotset:200MB/s,10%,90%", .hotset(Rate(bytesPerSecond: 200e6), hotPercent: 10, sharePercent: 90)),
            ("hotset:1GiB/s,2.5,75", .hotset(Rate(bytesPerSecond: 0x1p30), hotPercent: 2.5, sharePercent: 75)),
            ("sweep:100MB/s", .sweep(Rate(bytesPerSecond: 100e6))),
            ("sweep:5000pages/s", .sweep(Rate(pagesPerSecond: 5000))),
            ("trace:/path/file", .trace(path: "/path/file")),
            ("trace:/with:colon", .trace(path: "/with:colon")),
        ]
        for (text, spec) in cases {
            let parsed = try WorkloadSpec.parse(text)
            #expect(parsed == spec)
            #expect(try WorkloadSpec.parse(parsed.description) == parsed, "\(parsed.description)")
        }
        #expect(
            WorkloadSpec.hotset(Rate(bytesPerSecond: 200e6), hotPercent: 10, sharePercent: 90).description
                == "hotset:200MB/s,10%,90%")
    }

    @Test func workloadErrors() {
        for (text, fragment) in [
            ("busy", "expected idle, uniform:RATE"), ("random:1MB/s", "unknown kind 'random'"),
            ("uniform:fast", "rate 'fast'"), ("hotset:200MB/s,10%", "expected hotset:RATE,HOT%,SHARE%"),
            ("hotset:200MB/s,0%,90%", "above 0%"), ("hotset:200MB/s,10%,190%", "hot-set share '190%'"),
            ("trace:", "missing the trace file path"),
        ] {
            do {
                _ = try WorkloadSpec.parse(text)
                Issue.record("'\(text)' parsed")
            } catch {
                #expect(error.code == .invalidWorkload)
                #expect(error.message.contains("workload '\(text)'"), "\(error.message)")
                #expect(error.message.contains(fragment), "\(error.message)")
            }
        }
    }

    @Test func traces() throws {
        let trace = try DirtyTrace.parse(
            """
            # a comment
            10 1 2 3

            20
              30 7\t8 \r
            # trailing comment
            40 0
            """, pageCount: 16)
        #expect(trace.lineCount == 3)
        #expect(trace.entryCount == 6)
        #expect(trace.durationMs == 40)
        let replayed = trace.replayed()
        #expect(replayed.times == [10, 30, 40])
        #expect(replayed.starts == [0, 3, 5, 6])
        #expect(replayed.pages == [1, 2, 3, 7, 8, 0])
        #expect(try DirtyTrace.parse("", pageCount: 1).entryCount == 0)
    }

    @Test func traceErrorsNameTheLine() {
        for (text, message) in [
            ("10 1\n20 99\n", "trace line 2: page 99 is outside the image (pages 0…15)"),
            (
                "# c\n\n20 1\n10 2\n",
                "trace line 4: t_ms 10 is less than the previous line's 20; t_ms must not decrease"
            ),
            (
                "10 1 x2\n",
                "trace line 1: 'x2' is not a number; expected 't_ms page page ...' (decimal numbers separated by spaces), '#' comments or blank lines"
            ),
            (
                "10 1 # no inline comments\n",
                "trace line 1: '#' is not a number; expected 't_ms page page ...' (decimal numbers separated by spaces), '#' comments or blank lines"
            ),
            (
                "1 99999999999999999999999\n",
                "trace line 1: '99999999999999999999999' is not a number; expected 't_ms page page ...' (decimal numbers separated by spaces), '#' comments or blank lines"
            ),
        ] {
            #expect(throws: GuestError(.invalidTrace, message)) { try DirtyTrace.parse(text, pageCount: 16) }
        }
    }

    @Test func traceFileIsRead() throws {
        let file = ScratchFile("trace")
        defer { file.remove() }
        #expect(throws: GuestError.self) { try DirtyTrace.load(path: file.path, pageCount: 4) }
        try "5 1 2\n9 3\n".write(toFile: file.path, atomically: false, encoding: .utf8)
        let trace = try DirtyTrace.load(path: file.path, pageCount: 4)
        #expect(trace.replayed().pages == [1, 2, 3])
        #expect(trace.durationMs == 9)
    }
}

extension DirtyTrace {
    /// The trace as a `TraceReader` reads it back, line by line: each line's `t_ms` and the
    /// global index of its first entry (plus the total at the end), and every page in order.
    func replayed() -> (times: [UInt64], starts: [Int], pages: [UInt64]) {
        var reader = TraceReader(self)
        var times: [UInt64] = []
        var starts: [Int] = []
        var pages: [UInt64] = []
        for line in 0..<UInt64(lineCount) {
            var index: UInt64 = 0
            while let entry = reader.entry(line: line, index: index) {
                if index == 0 {
                    times.append(entry.time)
                    starts.append(Int(entry.lineStart))
                }
                pages.append(entry.page)
                index += 1
            }
        }
        starts.append(pages.count)
        return (times, starts, pages)
    }
}
