"""QEMU live migration (TCG) between two local QEMU processes, driven over QMP.

run_qemu: the guest paused with -S (idle only): multifd (4 channels) or plain pre-copy.
run_qemu_dirtying: the bench's dirtying guest (Tools/bench/qemu-guest, loaded with -kernel) runs
uniform:RATE like Ferry's built-in guest, migrated with post-copy (postcopy-ram on both sides,
migrate-start-postcopy once the first pre-copy pass is done) or with auto-converge (pre-copy,
throttling the vCPU). Besides QEMU's own figures it returns the guest's progress (pages written
per second of wall time): progress_before (from the guest's first progress line to the migrate
command), progress_during (from the migrate command until the guest runs on the destination,
downtime included: for post-copy that is the switch, for pre-copy the end), progress_after (the
first `run_for` seconds on the destination: post-copy's page faults fall in there) and
slowdown_pct = 100 × (1 − steps during ÷ (progress_before × that wall time)).

In both, the source maps the benchmark image as its RAM (share=off, so it never writes the file),
faulted in before the clock starts (prealloc=on, as Ferry's source faults its image in before its
guest runs); the destination's RAM is anonymous memory, QEMU's default, preallocated (or, on the
run that compares the copy with the image, a preallocated RAM file on /dev/shm that `cmp` can
read)."""
import json
import os
import shutil
import socket
import subprocess
import time

from . import qemuguest
from .procs import BenchError, Proc

BINARY = "qemu-system-x86_64"
INSTALL_HINT = "apt-get install -y qemu-system-x86   (or rerun with --install-qemu)"


def installed():
    return shutil.which(BINARY) is not None


def version():
    try:
        return subprocess.run([BINARY, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return None


class QMP:
    """A minimal QMP client: JSON lines over a unix socket; events are kept aside."""

    def __init__(self, sock_path, proc, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(max(timeout, 30))
                self.sock.connect(sock_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if proc.popen.poll() is not None:
                    raise BenchError(f"QEMU exited with {proc.popen.returncode} before its QMP socket opened: {proc.tail()}")
                if time.monotonic() > deadline:
                    raise BenchError(f"QEMU's QMP socket {sock_path} did not open within {timeout:.0f} s")
                time.sleep(0.05)
        self.file = self.sock.makefile("rw", encoding="utf-8")
        self.events = []
        greeting = json.loads(self.file.readline() or "null")
        if not greeting or "QMP" not in greeting:
            raise BenchError(f"QMP greeting missing on {sock_path}")
        self.execute("qmp_capabilities")

    def execute(self, command, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.file.write(json.dumps(msg) + "\n")
            self.file.flush()
        except OSError as e:
            raise BenchError(f"QMP connection lost before {command}: {e}")
        while True:
            try:
                line = self.file.readline()
            except OSError as e:
                raise BenchError(f"QMP connection lost during {command}: {e} (did QEMU crash? see its log)")
            if not line:
                raise BenchError(f"QMP connection closed during {command}")
            reply = json.loads(line)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise BenchError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _machine_args(ctx, mem_object, sock, file=True):
    size = f"{ctx.image_bytes // (1 << 20)}M"
    backend = "memory-backend-file" if file else "memory-backend-ram"
    return [BINARY, "-machine", "q35", "-accel", "tcg", "-m", size,
            "-object", f"{backend},id=mem,size={size},{mem_object}", "-machine", "memory-backend=mem",
            "-nographic", "-nodefaults", "-qmp", f"unix:{sock},server=on,wait=off"]


def _free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_qemu(ctx, path, workload, logdir, multifd):
    if workload != "idle":
        raise BenchError("QEMU's guest is paused (-S): idle only")
    if not installed():
        raise BenchError(f"{BINARY} not installed: {INSTALL_HINT}")
    src_sock, dst_sock = os.path.join(ctx.workdir, "qmp-src.sock"), os.path.join(ctx.workdir, "qmp-dst.sock")
    dst_ram = os.path.join(ctx.workdir, "qemu-dst.ram")
    for p in (src_sock, dst_sock, dst_ram):
        if os.path.exists(p):
            os.unlink(p)
    prealloc = "on" if ctx.qemu_prealloc else "off"
    # Anonymous RAM unless this run's copy is compared with the image (then a file cmp can read).
    dst_backend = f"mem-path={dst_ram},share=on,prealloc={prealloc}" if ctx.verify_copies else f"prealloc={prealloc}"
    dst = Proc(path.dst_prefix() + _machine_args(ctx, dst_backend, dst_sock, file=ctx.verify_copies)
               + ["-incoming", "defer"], os.path.join(logdir, "dst.log"))
    src = Proc(path.src_prefix() + _machine_args(ctx, f"mem-path={ctx.image},share=off,prealloc={prealloc}", src_sock) + ["-S"],
               os.path.join(logdir, "src.log"))
    qs = qd = None
    try:
        qs = QMP(src_sock, src, 30)
        qd = QMP(dst_sock, dst, 120)  # prealloc of the destination's RAM happens before QMP answers
        caps = [{"capability": "multifd", "state": multifd}]
        for q in (qs, qd):
            q.execute("migrate-set-capabilities", capabilities=caps)
            if multifd:
                q.execute("migrate-set-parameters", **{"multifd-channels": ctx.qemu_channels})
        qs.execute("migrate-set-parameters", **{"max-bandwidth": 100 * 10**9, "downtime-limit": int(ctx.downtime_ms)})
        # the namespace is fresh, so any port is free there; on loopback ask the kernel for one
        port = _free_port("127.0.0.1") if not path.shaped else 47000 + (ctx.next_port() % 1000)
        uri = f"tcp:{path.dst_addr}:{port}"
        qd.execute("migrate-incoming", uri=uri)
        qs.execute("migrate", uri=uri)
        deadline = time.monotonic() + ctx.run_timeout
        while True:
            info = qs.execute("query-migrate")
            status = info.get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                raise BenchError(f"QEMU migration {status}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                qs.execute("migrate_cancel")
                raise BenchError(f"QEMU migration not done after {ctx.run_timeout:.0f} s (status {status})")
            time.sleep(0.02)
        dst_info = _wait_dst_completed(qd)
        ram = info.get("ram", {})
        verified = None
        if ctx.verify_copies:
            verified = subprocess.run(["cmp", "-s", ctx.image, dst_ram]).returncode == 0
        return {
            "total_ms": info.get("total-time"), "downtime_ms": info.get("downtime"),
            "setup_ms": info.get("setup-time"), "wire_bytes": ram.get("transferred"),
            "rounds": ram.get("dirty-sync-count"), "mb_per_s": ram.get("mbps", 0) / 8,
            "throttle_percent": info.get("cpu-throttle-percentage", 0), "verified": verified,
            "pages": {"zero": ram.get("duplicate"), "normal": ram.get("normal")},
            "detail": {"source": info, "destination": dst_info, "uri": uri,
                       "capabilities": caps, "multifd_channels": ctx.qemu_channels if multifd else None},
        }
    finally:
        _shut_down((qs, qd), (src, dst))
        for p in (src_sock, dst_sock, dst_ram):
            if os.path.exists(p):
                os.unlink(p)


def _shut_down(monitors, processes):
    """Asks each QEMU that has a monitor to quit, then waits up to 5 s for each process and stops it."""
    for q in monitors:
        if q:
            try:
                q.execute("quit")
            except (BenchError, OSError, ValueError):
                pass
            q.close()
    for p in processes:
        if p is None:
            continue
        try:
            p.wait(5)
        except BenchError:
            pass  # wait() already ended it
        p.stop()


def _wait_dst_completed(qd):
    deadline = time.monotonic() + 30
    while True:
        info = qd.execute("query-migrate")
        if info.get("status") == "completed" or time.monotonic() > deadline:
            return info
        time.sleep(0.02)


# Post-copy: migrate-start-postcopy once this many pre-copy passes are complete (QEMU's
# dirty-sync-count is 1 during the first pass and 2 once it is done).
POSTCOPY_AFTER_PASSES = 1
# q35 keeps all RAM below 4 GiB up to 0xb0000000 bytes; the guest writes only below 4 GiB.
Q35_LOWMEM_MAX = 0xb0000000


def _event_times(q, name, after_wall):
    """time.monotonic() of each QMP event `name` stamped after `after_wall` (time.time())."""
    shift = time.time() - time.monotonic()
    out = []
    for e in q.events:
        ts = e.get("timestamp", {})
        wall = ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6
        if e.get("event") == name and wall >= after_wall:
            out.append(wall - shift)
    return out


def run_qemu_dirtying(ctx, path, workload, logdir, mode, run_for):
    """One migration of the dirtying guest; mode "postcopy" or "autoconverge"."""
    rate = qemuguest.workload_rate(workload)
    if not installed():
        raise BenchError(f"{BINARY} not installed: {INSTALL_HINT}")
    if ctx.image_bytes >= Q35_LOWMEM_MAX:
        raise BenchError("the QEMU guest writes RAM below 4 GiB only, and q35 puts RAM above 4 GiB from "
                         "2.75 GiB on: use --size 2G (or up to 2815M)")
    w = ctx.workdir
    src_sock, dst_sock = os.path.join(w, "qmp-src.sock"), os.path.join(w, "qmp-dst.sock")
    ser_src, ser_dst = os.path.join(w, "com1-src.sock"), os.path.join(w, "com1-dst.sock")
    for p in (src_sock, dst_sock):
        if os.path.exists(p):
            os.unlink(p)
    prealloc = "on" if ctx.qemu_prealloc else "off"
    append = f"rate={rate} ram_mib={ctx.image_bytes >> 20} seed={ctx.seed}"

    def guest_args(serial):
        return ["-kernel", ctx.qemu_guest, "-append", append,
                "-chardev", f"socket,id=com1,path={serial}", "-serial", "chardev:com1"]

    dst = src = qs = qd = log_src = log_dst = None
    try:
        log_src = qemuguest.SerialLog(ser_src, os.path.join(logdir, "src-com1.log"))
        log_dst = qemuguest.SerialLog(ser_dst, os.path.join(logdir, "dst-com1.log"))
        dst = Proc(path.dst_prefix() + _machine_args(ctx, f"prealloc={prealloc}", dst_sock, file=False)
                   + guest_args(ser_dst) + ["-incoming", "defer"], os.path.join(logdir, "dst.log"))
        src = Proc(path.src_prefix() + _machine_args(ctx, f"mem-path={ctx.image},share=off,prealloc={prealloc}",
                                                     src_sock) + guest_args(ser_src) + ["-S"],
                   os.path.join(logdir, "src.log"))
        qs = QMP(src_sock, src, 120)
        qd = QMP(dst_sock, dst, 120)  # prealloc of the destination's RAM happens before QMP answers
        if mode == "postcopy":
            src_caps = [{"capability": "postcopy-ram", "state": True}]
            dst_caps = src_caps + [{"capability": "postcopy-blocktime", "state": True}]
        else:
            src_caps = dst_caps = [{"capability": "auto-converge", "state": True}]
        qs.execute("migrate-set-capabilities", capabilities=src_caps)
        qd.execute("migrate-set-capabilities", capabilities=dst_caps)
        qs.execute("migrate-set-parameters", **{"max-bandwidth": 100 * 10**9, "downtime-limit": int(ctx.downtime_ms)})
        params = qs.execute("query-migrate-parameters")
        # boot: the guest measures its TSC, prints "ready", and writes from then on
        qs.execute("cont")
        t_ready, m = log_src.wait_for(qemuguest.READY, 60, src)
        tsc_hz, first, end = int(m.group(1)), int(m.group(3)), int(m.group(4))
        time.sleep(ctx.run_before_s)
        port = _free_port("127.0.0.1") if not path.shaped else 47000 + (ctx.next_port() % 1000)
        uri = f"tcp:{path.dst_addr}:{port}"
        qd.execute("migrate-incoming", uri=uri)
        wall0 = time.time()
        t0 = time.monotonic()
        qs.execute("migrate", uri=uri)
        deadline = t0 + ctx.run_timeout
        max_throttle, switch, statuses = 0, None, []
        while True:
            info = qs.execute("query-migrate")
            status = info.get("status")
            ram = info.get("ram", {})
            max_throttle = max(max_throttle, info.get("cpu-throttle-percentage", 0) or 0)
            if not statuses or statuses[-1][1] != status:
                statuses.append((round((time.monotonic() - t0) * 1000), status))
            if (mode == "postcopy" and switch is None and status == "active"
                    and ram.get("dirty-sync-count", 0) >= POSTCOPY_AFTER_PASSES + 1):
                qs.execute("migrate-start-postcopy")
                switch = {"after_passes": ram.get("dirty-sync-count", 0) - 1,
                          "command_ms": round((time.monotonic() - t0) * 1000),
                          "remaining_bytes": ram.get("remaining"), "transferred_bytes": ram.get("transferred")}
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                raise BenchError(f"QEMU migration {status}: {info.get('error-desc', '')}")
            now = time.monotonic()
            if now > deadline and status not in ("postcopy-active", "device"):
                try:
                    qs.execute("migrate_cancel")
                except BenchError:
                    pass
                time.sleep(0.3)  # the source's guest goes on: let its last progress line arrive
                progress = qemuguest.Progress(tsc_hz, log_src.points(), [], fit_until=t0)
                partial = qemuguest.figures(progress, t_ready, t0, None, run_for, t_end=now)
                partial.update({"rounds": ram.get("dirty-sync-count"), "wire_bytes": ram.get("transferred"),
                                "throttle_percent": max_throttle,
                                "detail": {"source": info, "statuses": statuses, "uri": uri}})
                err = BenchError(
                    f"QEMU migration not done after {ctx.run_timeout:.0f} s, cancelled (status {status}, "
                    f"pass {ram.get('dirty-sync-count')}, throttle {max_throttle}%, "
                    f"{(ram.get('transferred') or 0) / 1e6:.0f} MB sent, {(ram.get('remaining') or 0) / 1e6:.0f} MB "
                    f"still dirty; guest {partial['progress_during']} pages/s against {partial['progress_before']} "
                    f"before)")
                err.partial = partial
                raise err
            if now > deadline + 120:
                raise BenchError(f"QEMU post-copy still {status} {now - t0:.0f} s after the migrate command")
            time.sleep(0.02)
        t_done = time.monotonic()
        dst_info = _wait_dst_completed(qd)
        resumed = _event_times(qd, "RESUME", wall0)
        if not resumed:
            raise BenchError("the destination QEMU sent no RESUME event")
        t_resume = resumed[0]
        # let the guest run on at the destination for run_for (and lines after the end arrive)
        time.sleep(max(0.0, max(t_resume + run_for, t_done) + 0.3 - time.monotonic()))
        qs.execute("query-status")  # reads the source's pending events
        stopped = [t for t in _event_times(qs, "STOP", wall0) if t <= t_resume]
        t_stop = stopped[-1] if stopped else t_resume
        dst_info = qd.execute("query-migrate") or dst_info
        progress = qemuguest.Progress(tsc_hz, log_src.points(), log_dst.points(), t_stop, t_resume, fit_until=t0)
        result = qemuguest.figures(progress, t_ready, t0, t_resume, run_for)
        # the same slowdown up to the source's completion (post-copy: its whole post-copy phase too)
        t_complete = t0 + info.get("total-time", 0) / 1000
        to_end = progress.rate(t0, t_complete)
        result["slowdown_to_end_pct"] = (round(100 * (1 - to_end / result["progress_before"]), 1)
                                         if to_end is not None and result["progress_before"] else None)
        # The table's slow% and "during" are Ferry's: until all the guest's memory is at the
        # destination (a post-copy's push included); the figures until the resume stay beside them.
        result["slowdown_to_resume_pct"], result["progress_to_resume"] = result["slowdown_pct"], result["progress_during"]
        result["slowdown_pct"] = result["slowdown_to_end_pct"]
        result["progress_during"] = round(to_end, 1) if to_end is not None else None
        if mode == "postcopy" and switch is not None:
            # the post-copy phase itself: from the resume to the source's completion
            switch.update({"switch_ms": round((t_stop - t0) * 1000), "duration_ms": round((t_complete - t_resume) * 1000),
                           "requests": info.get("ram", {}).get("postcopy-requests"),
                           "blocktime_ms": dst_info.get("postcopy-blocktime"),
                           "vcpu_blocktime_ms": dst_info.get("postcopy-vcpu-blocktime"),
                           "progress": round(progress.rate(t_resume, t_complete), 1) if t_complete > t_resume else None})
            result["progress_postcopy"] = switch["progress"]
        ram = info.get("ram", {})
        gap = progress.tsc_gap()
        result.update({
            "total_ms": info.get("total-time"), "downtime_ms": info.get("downtime"),
            "setup_ms": info.get("setup-time"), "wire_bytes": ram.get("transferred"),
            "rounds": ram.get("dirty-sync-count"), "mb_per_s": ram.get("mbps", 0) / 8,
            "throttle_percent": max_throttle, "verified": None,
            "pages": {"zero": ram.get("duplicate"), "normal": ram.get("normal")},
            "qemu_postcopy": switch if mode == "postcopy" else None,
            "detail": {"source": info, "destination": dst_info, "uri": uri, "statuses": statuses,
                       "capabilities": {"source": src_caps, "destination": dst_caps}, "parameters": params,
                       "guest": {"tsc_hz": tsc_hz, "tsc_hz_measured": round(progress.hz),
                                 "rate_bytes_per_s": rate, "first_page": first, "end_page": end,
                                 "target_steps_per_s": round(rate / 4096, 1), "run_for_s": run_for,
                                 "tsc_gap_ms": round(gap * 1000, 1) if gap is not None else None},
                       "downtime_events_ms": round((t_resume - t_stop) * 1000, 1),
                       "completed_after_ms": round((t_done - t0) * 1000)},
        })
        return result
    finally:
        _shut_down((qs, qd), (src, dst))
        for log in (log_src, log_dst):
            if log is not None:
                log.close()
        for p in (src_sock, dst_sock):
            if os.path.exists(p):
                os.unlink(p)
