import Testing
@testable import FerrySystem
