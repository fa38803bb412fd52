"""The network paths a run goes over: loopback, or a veth pair between two network namespaces
that this script creates itself, shaped with tc tbf in both directions."""
import re
import shutil
import subprocess

from .procs import BenchError, run_checked

SRC_NS = "fbench-src"
DST_NS = "fbench-dst"
SRC_IF = "fbench-s"
DST_IF = "fbench-d"
SRC_ADDR = "10.88.0.2"
DST_ADDR = "10.88.0.1"  # the receiver listens here; only this and 127.0.0.1 are ever targeted

RATE = re.compile(r"^(\d+)(gbit|mbit)$")


def parse_path(name):
    """'loopback', or a tbf rate like '1gbit', '10gbit', '500mbit'."""
    if name == "loopback":
        return None
    m = RATE.match(name)
    if not m:
        raise BenchError(f"path '{name}': use loopback or a rate like 1gbit, 10gbit, 500mbit")
    bits = int(m.group(1)) * (10**9 if m.group(2) == "gbit" else 10**6)
    if not 10**7 <= bits <= 4 * 10**10:
        raise BenchError(f"path '{name}': rate must lie in 10mbit…40gbit")
    return bits


def ns_exists(name):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(line.split()[0] == name for line in out.splitlines() if line.strip())


def remove_namespaces():
    """Deletes the two namespaces (their veth ends go with them). Safe to call any time."""
    for ns in (SRC_NS, DST_NS):
        if ns_exists(ns):
            subprocess.run(["ip", "netns", "del", ns], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class NetPath:
    """Where the sender and receiver run and which address the sender targets."""

    def __init__(self, name):
        self.name = name
        self.bits_per_s = parse_path(name)
        self.shaped = self.bits_per_s is not None
        self.tc_detail = ""

    @property
    def dst_addr(self):
        return DST_ADDR if self.shaped else "127.0.0.1"

    def src_prefix(self):
        return ["ip", "netns", "exec", SRC_NS] if self.shaped else []

    def dst_prefix(self):
        return ["ip", "netns", "exec", DST_NS] if self.shaped else []

    def __enter__(self):
        if self.shaped:
            remove_namespaces()
            try:
                self._create()
            except BaseException:
                remove_namespaces()
                raise
        return self

    def __exit__(self, *exc):
        if self.shaped:
            remove_namespaces()
        return False

    def _create(self):
        ip = lambda *a: run_checked(["ip", *a], f"ip {' '.join(a)}")
        ip("netns", "add", SRC_NS)
        ip("netns", "add", DST_NS)
        ip("link", "add", SRC_IF, "netns", SRC_NS, "type", "veth", "peer", "name", DST_IF, "netns", DST_NS)
        for ns, dev, addr in ((SRC_NS, SRC_IF, SRC_ADDR), (DST_NS, DST_IF, DST_ADDR)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        # tbf: the bucket holds 2 ms of traffic (at least 128 KiB, so a 64 KiB GSO packet is never
        # split), and at most 10 ms of traffic waits in the queue.
        rate_bytes = self.bits_per_s // 8
        burst = max(128 * 1024, rate_bytes // 500)
        args = ["root", "tbf", "rate", f"{self.bits_per_s}bit", "burst", str(burst), "latency", "10ms"]
        for ns, dev in ((SRC_NS, SRC_IF), (DST_NS, DST_IF)):
            run_checked(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, *args],
                        f"tc qdisc add dev {dev} (in {ns})")
        self.tc_detail = " ".join(args[1:])
        if shutil.which("ping"):
            run_checked(["ip", "netns", "exec", SRC_NS, "ping", "-c", "1", "-W", "2", DST_ADDR],
                        f"ping {DST_ADDR} from {SRC_NS}")
