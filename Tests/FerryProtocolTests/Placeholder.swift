import Testing
@testable import FerryProtocol
