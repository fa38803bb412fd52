import Testing
@testable import FerryTransport
