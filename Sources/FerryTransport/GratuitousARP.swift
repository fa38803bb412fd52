import FerryProtocol
import FerrySystem
import Glibc
import Logging

/// Announces a guest's MAC and IPv4 address after it resumed on a new host, so Ethernet
/// switches (and bridges) learn which port now leads to the MAC, and neighbours refresh their
/// ARP caches: the "gratuitous ARP" a hypervisor sends after live migration.
public enum GratuitousARP {
    static let etherTypeARP: UInt16 = 0x0806
    /// Ethernet header (14) + ARP for IPv4 over Ethernet (28) = 42, padded to the 60-byte minimum.
    public static let frameSize = 60

    /// One broadcast ARP request frame announcing `ip` at `mac`: Ethernet destination
    /// ff:ff:ff:ff:ff:ff, source `mac`, EtherType 0x0806; ARP htype 1, ptype 0x0800, hlen 6,
    /// plen 4, oper 1 (request), sender `mac`/`ip`, target 00:00:00:00:00:00/`ip`; zero padding.
    public static func frame(mac: MACAddress, ip: IPv4Address) -> [UInt8] {
        var frame = [UInt8]()
        frame.reserveCapacity(frameSize)
        frame += MACAddress.broadcast.octets
        frame += mac.octets
        frame += [UInt8(etherTypeARP >> 8), UInt8(etherTypeARP & 0xFF)]
        frame += [0x00, 0x01]  // hardware type: Ethernet
        frame += [0x08, 0x00]  // protocol type: IPv4
        frame += [6, 4]  // address lengths
        frame += [0x00, 0x01]  // operation: request
        frame += mac.octets
        frame += ip.bytes
        frame += MACAddress.none.octets
        frame += ip.bytes
        frame += [UInt8](repeating: 0, count: frameSize - frame.count)
        return frame
    }

    /// Sends `rounds` announce frames on `interface` from an AF_PACKET socket, first at once and
    /// then with growing gaps (`initialDelayMs`, + `stepMs` each time: 50, 150, 250, … ms as QEMU
    /// does). Needs CAP_NET_RAW. The socket lives in the calling thread's network namespace.
    /// Returns the number of frames sent.
    @discardableResult
    public static func announce(
        interface: String, mac: MACAddress, ip: IPv4Address, rounds: Int = 5,
        initialDelayMs: Int = 50, stepMs: Int = 100, logger: Logger
    ) throws(TransportError) -> Int {
        guard !mac.isNone, !mac.isMulticast else {
            throw TransportError(
                .address, "cannot announce MAC \(mac): a guest NIC needs a unicast, non-zero MAC address")
        }
        let fd = try openPacketSocket(interface: interface)
        defer { close(fd) }

        let bytes = frame(mac: mac, ip: ip)
        var sent = 0
        for round in 0..<max(0, rounds) {
            if round > 0 {
                MonotonicClock.sleep(milliseconds: initialDelayMs + (round - 1) * stepMs)
            }
            let what = "send of the gratuitous ARP on '\(interface)'"
            let written: Int
            do throws(SystemError) {
                written = try valueOrErrno("send") { bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) } }
            } catch {
                let hint = error.errno == .networkDown ? "; bring the interface up (`ip link set \(interface) up`)" : ""
                throw TransportError(.io, what, failed: error, hint: hint)
            }
            guard written == bytes.count else {
                throw TransportError(.io, "\(what): short write of \(written) bytes")
            }
            sent += 1
            logger.debug(
                "sent gratuitous ARP",
                metadata: [
                    "announce.interface": "\(interface)", "announce.mac": "\(mac)", "announce.ip": "\(ip)",
                    "announce.round": "\(round + 1)",
                ])
        }
        logger.info(
            "announced guest on the network",
            metadata: [
                "announce.interface": "\(interface)", "announce.mac": "\(mac)", "announce.ip": "\(ip)",
                "announce.frames": "\(sent)",
            ])
        return sent
    }

    /// An AF_PACKET socket bound to `interface`, for sending whole Ethernet frames.
    private static func openPacketSocket(interface: String) throws(TransportError) -> Int32 {
        // if_nametoindex fails with 0 (not -1), and sets errno.
        let index = if_nametoindex(interface)
        guard index != 0 else {
            let failure = SystemError.lastError("if_nametoindex(\(interface))")
            throw TransportError(
                .address,
                "network interface '\(interface)' not found (\(failure.errno!)); list the interfaces with `ip link`",
                cause: failure)
        }
        // Protocol 0: the socket only sends, so the kernel queues no incoming frames on it.
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("socket(AF_PACKET, SOCK_RAW)") {
                socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            }
        } catch {
            let hint =
                error.errno == .notPermitted || error.errno == .permissionDenied
                ? "; sending raw Ethernet frames needs root or CAP_NET_RAW" : ""
            throw TransportError(.io, "socket(AF_PACKET, SOCK_RAW) for the announce", failed: error, hint: hint)
        }
        // struct sockaddr_ll (linux/if_packet.h): family u16, protocol be16, ifindex i32,
        // hatype u16, pkttype u8, halen u8, addr[8]: 20 bytes. Binding with protocol 0 picks the
        // interface without subscribing to any EtherType; the frame carries its own header.
        var linkAddress = [UInt8](repeating: 0, count: 20)
        linkAddress.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)
            raw.storeBytes(of: Int32(bitPattern: index), toByteOffset: 4, as: Int32.self)
            raw[11] = 6
            for offset in 0..<6 { raw[12 + offset] = 0xFF }
        }
        do throws(SystemError) {
            try valueOrErrno("bind(AF_PACKET)") {
                linkAddress.withUnsafeBytes {
                    bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
                }
            }
        } catch {
            close(fd)
            throw TransportError(.io, "bind(AF_PACKET) to interface '\(interface)'", failed: error)
        }
        return fd
    }
}
