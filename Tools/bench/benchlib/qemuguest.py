"""The dirtying guest for QEMU (Tools/bench/qemu-guest): building it, reading its progress lines
from a serial port, and turning them into the guest's progress rate before, during and after a
migration.

The guest prints "steps=N tsc=T ..." every 50 ms of its TSC on COM1. QEMU connects each side's
COM1 to a unix socket this module listens on; a thread stamps every line with time.monotonic()
as it arrives. Under TCG the guest's TSC runs with the host's clock while the VM runs and stands
still while it is stopped (the downtime), and a migration carries it over, so one sequence of
(T, N) spans both sides; on each side, host time = T / tsc_hz + offset, and the offset is the
smallest (arrival - T / tsc_hz) over that side's lines (the line that waited least)."""
import os
import re
import socket
import threading
import time

from .procs import BenchError, run_checked

GUEST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "qemu-guest")
READY = re.compile(r"ferry-qemu-guest: ready tsc_hz=(\d+) rate=(\d+) first=(\d+) end=(\d+)")
PROGRESS = re.compile(r"^steps=(\d+) tsc=(\d+)")

CFLAGS = ["-m32", "-march=i686", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-ffreestanding", "-fno-pic",
          "-fno-pie", "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-mgeneral-regs-only"]


def build(workdir):
    """gcc -m32 -ffreestanding + ld -m elf_i386: a multiboot ELF for QEMU's -kernel."""
    objs = []
    for src in ("entry.S", "guest.c"):
        obj = os.path.join(workdir, "qemu-guest-" + src.split(".")[0] + ".o")
        run_checked(["gcc", *CFLAGS, "-c", os.path.join(GUEST_DIR, src), "-o", obj], f"gcc -m32 qemu-guest/{src}")
        objs.append(obj)
    out = os.path.join(workdir, "qemu-guest.elf")
    run_checked(["ld", "-m", "elf_i386", "-nostdlib", "-static", "--build-id=none", "-z", "noexecstack",
                 "--no-warn-rwx-segments", "-T", os.path.join(GUEST_DIR, "guest.ld"), *objs, "-o", out],
                "ld qemu-guest.elf")
    return out


_BYTE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
               "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def rate_bytes(text):
    """Bytes per second of a rate as Ferry writes it (Sources/FerryGuest/Rate.swift): 250MB/s,
    64MiB/s, 800Mbit/s, 100Mb/s, 50000pages/s (4 KiB pages)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]+)/s\s*", text)
    if not m:
        raise BenchError(f"rate '{text}': expected a number, a unit and /s, e.g. 250MB/s")
    value, unit = float(m.group(1)), m.group(2)
    low = unit.lower()
    if low in ("pages", "page"):
        return value * 4096
    for suffix in ("bits", "bit"):
        if low.endswith(suffix) and low[:-len(suffix)] in ("", "k", "m", "g", "t"):
            return value * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[low[:-len(suffix)]] / 8
    if unit.endswith("B") and low in _BYTE_UNITS:
        return value * _BYTE_UNITS[low]
    if unit.endswith("b") and unit[:-1] in ("", "k", "K", "M", "G", "T"):
        return value * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[unit[:-1].lower()] / 8
    raise BenchError(f"rate '{text}': unit '{unit}' not understood here (use B, kB, MB, GB, KiB, MiB, GiB, Mbit, pages)")


def workload_rate(workload):
    """The guest's write rate in bytes/s for a workload it can run: uniform:RATE (0 for idle)."""
    if workload == "idle":
        return 0
    if workload.startswith("uniform:"):
        rate = rate_bytes(workload[len("uniform:"):])
        if not 0 < rate < 2**32:
            raise BenchError(f"{workload}: the QEMU guest takes rates from 1 B/s to 4.29 GB/s")
        return int(round(rate))
    raise BenchError(f"{workload}: the QEMU guest only runs uniform:RATE (and idle)")


class SerialLog:
    """A unix socket that one QEMU's COM1 connects to; every line is kept with its arrival time
    (time.monotonic()) and written to `log_path` with it."""

    def __init__(self, sock_path, log_path):
        self.sock_path = sock_path
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        self.listener.listen(1)
        self.lines = []  # (arrival, text)
        self.lock = threading.Lock()
        self.log = open(log_path, "w")
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                now = time.monotonic()
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace").rstrip("\r")
                    with self.lock:
                        self.lines.append((now, text))
                        if not self.log.closed:
                            self.log.write(f"{now:.6f} {text}\n")
                            self.log.flush()

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def wait_for(self, pattern, timeout, proc=None):
        """The first line matching `pattern` (a compiled regex): (arrival, match)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, text in self.snapshot():
                m = pattern.search(text)
                if m:
                    return t, m
            if proc is not None and proc.popen.poll() is not None:
                raise BenchError(f"QEMU exited with {proc.popen.returncode} before its guest printed "
                                 f"'{pattern.pattern}': {proc.tail()}")
            time.sleep(0.02)
        raise BenchError(f"the QEMU guest did not print '{pattern.pattern}' within {timeout:.0f} s")

    def points(self):
        """[(arrival, tsc, steps)] of the progress lines."""
        out = []
        for t, text in self.snapshot():
            m = PROGRESS.match(text)
            if m:
                out.append((t, int(m.group(2)), int(m.group(1))))
        return out

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        self.thread.join(timeout=2)
        with self.lock:
            self.log.close()
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)


class Progress:
    """Steps (pages written) of the guest at a given host time (time.monotonic()), from both
    sides' progress lines; `t_stop` (the source paused the guest) and `t_resume` (it runs on the
    destination) split them."""

    def __init__(self, tsc_hz, src_points, dst_points, t_stop=None, t_resume=None, fit_until=None):
        if not src_points:
            raise BenchError("the QEMU guest printed no progress on the source")
        self.src, self.dst = src_points, dst_points
        self.t_stop, self.t_resume = t_stop, t_resume
        self.guest_hz = float(tsc_hz)
        self.hz = self._fit_hz([p for p in src_points if fit_until is None or p[0] <= fit_until]) or self.guest_hz
        self.off_src = min(t - tsc / self.hz for t, tsc, _ in src_points)
        self.off_dst = min((t - tsc / self.hz for t, tsc, _ in dst_points), default=None)
        self.curve = sorted({(tsc, n) for _, tsc, n in src_points + dst_points})

    @staticmethod
    def _fit_hz(points):
        """The TSC's real rate: least squares of TSC against arrival time (at least 0.5 s of lines),
        so that the figures do not depend on the guest's own calibration."""
        if len(points) < 5 or points[-1][0] - points[0][0] < 0.5:
            return None
        n = len(points)
        mt = sum(p[0] for p in points) / n
        mc = sum(p[1] for p in points) / n
        num = sum((p[0] - mt) * (p[1] - mc) for p in points)
        den = sum((p[0] - mt) ** 2 for p in points)
        return num / den if den > 0 else None

    def tsc_at(self, t):
        """The guest's TSC at host time t."""
        if self.t_stop is None or t <= self.t_stop or self.off_dst is None:
            return (t - self.off_src) * self.hz
        if self.t_resume is not None and t >= self.t_resume:
            return (t - self.off_dst) * self.hz
        return (self.t_stop - self.off_src) * self.hz  # stopped: the TSC stands still

    def steps_at(self, t):
        """Steps at host time t: linear between the two progress lines around the guest's TSC then."""
        tsc = self.tsc_at(t)
        c = self.curve
        if tsc <= c[0][0]:
            return c[0][1]
        for (t0, n0), (t1, n1) in zip(c, c[1:]):
            if t0 <= tsc <= t1:
                return n0 + (n1 - n0) * (tsc - t0) / (t1 - t0) if t1 > t0 else n1
        return c[-1][1]

    def rate(self, a, b):
        """Steps per second of wall time from a to b."""
        return (self.steps_at(b) - self.steps_at(a)) / (b - a) if b > a else None

    def last_time(self):
        """Host time of the last progress line (of the destination if it printed any)."""
        return (self.dst or self.src)[-1][0]

    def tsc_gap(self):
        """The destination's first TSC minus the source's last (about 50 ms of running time if the
        TSC carried over); None without destination lines."""
        if not self.dst:
            return None
        return (self.dst[0][1] - self.src[-1][1]) / self.hz


def figures(progress, t_ready, t0, t_resume, run_for, t_end=None):
    """progress_before/during/after and slowdown_pct (module docstring of qemu.py says what each
    covers); with t_end (a migration that did not finish) 'during' runs from t0 to t_end."""
    before = progress.rate(t_ready, t0)
    end = t_resume if t_resume is not None else t_end
    during = progress.rate(t0, end) if end is not None else None
    after = None
    if t_resume is not None and progress.dst:
        # only as far as the destination's lines reach
        after_end = min(t_resume + run_for, progress.last_time())
        after = progress.rate(t_resume, after_end) if after_end > t_resume + 0.2 else None
    slowdown = 100 * (1 - during / before) if before and during is not None else None
    r = lambda v: None if v is None else round(v, 1)
    return {"progress_before": r(before), "progress_during": r(during), "progress_after": r(after),
            "slowdown_pct": r(slowdown)}
