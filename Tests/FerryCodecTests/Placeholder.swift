import Testing
@testable import FerryCodec
