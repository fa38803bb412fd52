import Foundation
import Testing

@testable import FerryController

/// The one parser of the times the controller API is given (a lease's `start` and `end`, an
/// invoice's `from` and `to`): RFC 3339 with or without fractions of a second and any offset,
/// every field range-checked; a date alone only where dates are allowed (the invoice); anything
/// else 422 naming the field.
@Suite struct CloudTimeTests {
    static let midnight = Date(timeIntervalSince1970: 1_796_083_200)  // 2026-12-01T00:00:00Z

    @Test(arguments: [
        ("2026-12-01T00:00:00Z", 0.0), ("2026-12-01T00:00:00.250Z", 0.25), ("2026-12-01T02:00:00+02:00", 0),
        ("2026-11-30T19:00:00.5-05:00", 0.5), ("2026-12-01t00:00:00z", 0), ("2026-12-01 00:00:00Z", 0),
        ("2026-12-01T00:00:01.000001Z", 1.000001), ("2026-11-30T23:59:59+00:00", -1),
    ])
    func rfc3339TimesAreAccepted(text: String, after: Double) throws {
        let expected = Self.midnight.addingTimeInterval(after)
        // To the microsecond (the fraction is added to the whole seconds in binary).
        #expect(abs(try CloudViews.parseTime(text, field: "start").timeIntervalSince(expected)) < 1e-6)
        #expect(abs(try CloudViews.parseTime(text, field: "from", dates: true).timeIntervalSince(expected)) < 1e-6)
    }

    @Test func aDateAloneIsMidnightUTCWhereDatesAreAllowed() throws {
        #expect(try CloudViews.parseTime("2026-12-01", field: "from", dates: true) == Self.midnight)
        let refused = Self.refusal("2026-12-01", field: "start", dates: false)
        #expect(refused?.field == "start" && refused?.code == "invalid_field", "\(String(describing: refused))")
        #expect(refused?.message.contains("or a date") == false)
    }

    @Test(arguments: [
        "", "yesterday", "2026-12-01T00:00:00", "2026-13-01T00:00:00Z", "2026-12-01T25:00:00Z", "1796083200",
        "2026-02-30T00:00:00Z", "2026-12-01T00:00:60Z", "2026-12-01T00:60:00Z", "2026-12-01T00:00:00.Z",
        "2026-12-01T00:00:00+0200", "2026-12-01T00:00:00+24:00", "2026-12-01T00:00:00Z ", "2026-12-1T00:00:00Z",
        "2026-12-01", "2026-12-01X00:00:00Z", "２026-12-01T00:00:00Z",
    ])
    func otherFormsAreRefusedNamingTheField(text: String) {
        for dates in [false, true] where !(dates && text == "2026-12-01") {
            let refused = Self.refusal(text, field: "end", dates: dates)
            #expect(refused?.status == .unprocessableContent, "\(text) (dates \(dates))")
            #expect(refused?.field == "end" && refused?.message.contains("\"\(text)\"") == true)
        }
    }

    static func refusal(_ text: String, field: String, dates: Bool) -> CloudAPIError? {
        do {
            _ = try CloudViews.parseTime(text, field: field, dates: dates)
            return nil
        } catch {
            return error
        }
    }
}
