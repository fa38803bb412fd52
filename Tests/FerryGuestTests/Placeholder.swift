import Testing
@testable import FerryGuest
