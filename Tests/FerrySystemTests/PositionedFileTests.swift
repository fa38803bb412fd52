import FerrySystem
import FerryTestSupport
import Foundation
import Testing

@Suite struct PositionedFileTests {
    /// Writes land at their offsets (a hole before them reads as zeros), and a read past the
    /// end returns only what is there.
    @Test func writesAtOffsetsAndReadsShortOnlyAtTheEnd() throws {
        let scratch = Scratch("positioned")
        let path = scratch.file("f")
        let writer = try PositionedFile(creating: path)
        try [UInt8](repeating: 7, count: 100).withUnsafeBytes { try writer.write($0, at: 1_000) }
        try [UInt8]([1, 2, 3]).withUnsafeBytes { try writer.write($0, at: 0) }
        #expect(try writer.size() == 1_100)

        let reader = try PositionedFile(reading: path)
        var buffer = [UInt8](repeating: 0xFF, count: 4_096)
        let count = try buffer.withUnsafeMutableBytes { try reader.read(at: 0, into: $0) }
        #expect(count == 1_100)
        #expect(Array(buffer[0..<4]) == [1, 2, 3, 0])
        #expect(buffer[999] == 0 && buffer[1_000] == 7 && buffer[1_099] == 7)
        #expect(buffer[1_100] == 0xFF, "nothing past the end is written into the buffer")
        let past = try buffer.withUnsafeMutableBytes { try reader.read(at: 5_000, into: $0) }
        #expect(past == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).count == 1_100)
    }

    @Test func aMissingFileNamesItsPath() {
        do {
            _ = try PositionedFile(reading: "/nonexistent/positioned")
            Issue.record("opened a file that does not exist")
        } catch {
            #expect(error.errno == .noSuchFileOrDirectory && "\(error)".contains("/nonexistent/positioned"), "\(error)")
        }
    }
}
