"""QEMU live migration (TCG, guest paused with -S) between two local QEMU processes, driven over
QMP: multifd (4 channels) or plain pre-copy. The source maps the benchmark image as its RAM
(share=off, so it never writes the file), faulted in before the clock starts (prealloc=on, as
Ferry's source faults its image in before its guest runs); the destination's RAM is anonymous
memory, QEMU's default, preallocated (or, on the run that compares the copy with the image, a
preallocated RAM file on /dev/shm that `cmp` can read)."""
import json
import os
import shutil
import socket
import subprocess
import time

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
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
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
        for q in (qs, qd):
            if q:
                try:
                    q.execute("quit")
                except (BenchError, OSError, ValueError):
                    pass
                q.close()
        for p in (src, dst):
            try:
                p.wait(5)
            except BenchError:
                pass  # wait() already ended it
            p.stop()
        for p in (src_sock, dst_sock, dst_ram):
            if os.path.exists(p):
                os.unlink(p)


def _wait_dst_completed(qd):
    deadline = time.monotonic() + 30
    while True:
        info = qd.execute("query-migrate")
        if info.get("status") == "completed" or time.monotonic() > deadline:
            return info
        time.sleep(0.02)
