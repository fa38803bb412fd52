import FerryProtocol
import FerryTransport
import Logging
import Testing

@Suite struct GratuitousARPTests {
    @Test func frameBytesFieldByField() throws {
        let mac = try MACAddress.parse("02:11:22:33:44:5a")
        let ip = try IPv4Address.parse("192.0.2.7")
        let frame = GratuitousARP.frame(mac: mac, ip: ip)
        #expect(frame.count == 60)
        #expect(Array(frame[0..<6]) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])  // Ethernet destination: broadcast
        #expect(Array(frame[6..<12]) == [0x02, 0x11, 0x22, 0x33, 0x44, 0x5A])  // Ethernet source: guest MAC
        #expect(Array(frame[12..<14]) == [0x08, 0x06])  // EtherType ARP
        #expect(Array(frame[14..<16]) == [0x00, 0x01])  // hardware type Ethernet
        #expect(Array(frame[16..<18]) == [0x08, 0x00])  // protocol type IPv4
        #expect(frame[18] == 6)  // hardware address length
        #expect(frame[19] == 4)  // protocol address length
        #expect(Array(frame[20..<22]) == [0x00, 0x01])  // operation: request
        #expect(Array(frame[22..<28]) == [0x02, 0x11, 0x22, 0x33, 0x44, 0x5A])  // sender MAC
        #expect(Array(frame[28..<32]) == [192, 0, 2, 7])  // sender IP
        #expect(Array(frame[32..<38]) == [0, 0, 0, 0, 0, 0])  // target MAC: unknown
        #expect(Array(frame[38..<42]) == [192, 0, 2, 7])  // target IP = sender IP
        #expect(frame[42...].allSatisfy { $0 == 0 })  // padding to the Ethernet minimum
    }

    @Test func macAddressParsing() throws {
        let mac = try MACAddress.parse("02:00:00:00:00:01")
        #expect(mac.octets == [2, 0, 0, 0, 0, 1])
        #expect(mac.description == "02:00:00:00:00:01")
        #expect(try MACAddress.parse("0A-1b-2C-3d-4E-5f").description == "0a:1b:2c:3d:4e:5f")
        #expect(!mac.isMulticast && !mac.isNone)
        #expect(try MACAddress.parse("01:00:5e:00:00:01").isMulticast)
        for bad in [
            "", "02:00:00:00:00", "02:00:00:00:00:01:02", "02:00:00:00:00:0g", "2:0:0:0:0:1", "02:00-00:00:00:01",
            "020000000001",
        ] {
            let error = #expect(throws: ProtocolError.self, "'\(bad)' should not parse") {
                _ = try MACAddress.parse(bad)
            }
            #expect(error?.message.contains("02:00:00:00:00:01") == true)
        }
    }

    @Test func ipv4AddressParsing() throws {
        let ip = try IPv4Address.parse("10.1.255.0")
        #expect(ip.bytes == [10, 1, 255, 0])
        #expect(ip.value == 0x0A01_FF00)
        #expect(ip.networkOrder == UInt32(0x0A01_FF00).bigEndian)
        #expect(ip.description == "10.1.255.0")
        #expect(IPv4Address(bytes: [10, 1, 255, 0]) == ip)
        for bad in ["", "10.1.255", "10.1.255.0.1", "256.1.1.1", "10.01.1.1", "10..1.1", "a.b.c.d", " 10.1.1.1"] {
            #expect(transportError { _ = try IPv4Address.parse(bad) }?.code == .address, "'\(bad)' should not parse")
        }
    }

    @Test func announceOnAMissingInterfaceNamesIt() throws {
        let error = transportError {
            _ = try GratuitousARP.announce(
                interface: "ferry-none0", mac: try MACAddress.parse("02:00:00:00:00:01"),
                ip: IPv4Address(192, 0, 2, 7), logger: Logger(label: "test"))
        }
        #expect(error?.code == .address)
        #expect(error?.message.contains("'ferry-none0' not found") == true, "\(error?.message ?? "")")
    }

    @Test func announceRefusesAMulticastMAC() throws {
        let error = transportError {
            _ = try GratuitousARP.announce(
                interface: "lo", mac: try MACAddress.parse("01:00:5e:00:00:01"),
                ip: IPv4Address(192, 0, 2, 7), logger: Logger(label: "test"))
        }
        #expect(error?.code == .address)
    }
}
