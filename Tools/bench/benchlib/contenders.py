"""The raw baseline (rawcopy) and Ferry: one run each, over one path, returning its figures."""
import json
import os
import subprocess
import time

from .memory import MemorySampler
from .procs import BenchError, Proc


def _load_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f"{what}: no JSON report at {path} ({e})")


def _remove(path):
    for p in (path, path + ".partial"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def run_raw(ctx, path, workload, logdir, prefault=False):
    """rawcopy: one TCP connection, the image's bytes and nothing else (idle only). With
    `prefault` the receiver's file is created and faulted in before it listens (not timed)."""
    if workload != "idle":
        raise BenchError("the raw baseline copies a still image: idle only")
    out = os.path.join(ctx.workdir, "raw-dst.img")
    recv_json, send_json = os.path.join(logdir, "recv.json"), os.path.join(logdir, "send.json")
    recv = Proc(path.dst_prefix() + [ctx.rawcopy, "recv", "--listen", f"{path.dst_addr}:0", "--out", out,
                                     "--json", recv_json]
                + (["--size", str(ctx.image_bytes), "--prefault", "on"] if prefault else []),
                os.path.join(logdir, "recv.log"))
    try:
        host, port = recv.wait_listening(120)
        send = Proc(path.src_prefix() + [ctx.rawcopy, "send", "--image", ctx.image, "--to", f"{host}:{port}",
                                         "--chunk", str(ctx.chunk), "--json", send_json],
                    os.path.join(logdir, "send.log"))
        rc = send.wait(ctx.run_timeout)
        if rc != 0:
            raise BenchError(f"rawcopy send exited {rc}: {send.tail()}")
        rc = recv.wait(30)
        if rc != 0:
            raise BenchError(f"rawcopy recv exited {rc}: {recv.tail()}")
        s, r = _load_json(send_json, "rawcopy send"), _load_json(recv_json, "rawcopy recv")
        verified = None
        if ctx.verify_copies:
            verified = subprocess.run(["cmp", "-s", ctx.image, out]).returncode == 0
        return {
            "total_ms": s["total_ms"], "receiver_ms": r["total_ms"], "downtime_ms": None, "setup_ms": None,
            "wire_bytes": s["bytes"], "rounds": 1, "mb_per_s": s["mb_per_s"], "throttle_percent": 0,
            "verified": verified, "detail": {"sender": s, "receiver": r},
        }
    finally:
        recv.stop()
        _remove(out)


def _bench_key(ctx):
    """A key file for the encrypted contenders, made once per invocation by ferry keygen."""
    key = os.path.join(ctx.workdir, "bench.key")
    if not os.path.exists(key):
        subprocess.run([ctx.ferry, "keygen", "--out", key], check=True, capture_output=True)
    return key


def progress_figures(source, destination):
    """The guest's progress over the migration from both reports (`progress`): its rate before,
    during (source's part, then the post-copy push on the destination, blackout included) and
    after; the slowdown is the share of its work lost against the rate before."""
    s, d = source.get("progress") or {}, destination.get("progress") or {}
    before = s.get("before_steps_per_s")
    steps = (s.get("during_steps") or 0) + (d.get("postcopy_steps") or 0)
    seconds = (s.get("during_s") or 0) + (d.get("postcopy_s") or 0)
    during = steps / seconds if seconds > 0 and s.get("during_steps") is not None else None
    after = d["after_steps"] / d["after_s"] if d.get("after_s") else None
    slowdown = 100 * (1 - during / before) if before and during is not None else None
    postcopy = destination.get("postcopy") or {}
    return {"progress_before": before, "progress_during": during, "progress_after": after, "slowdown_pct": slowdown,
            "fault_p50_ms": postcopy.get("fault_wait_p50_ms"), "fault_p99_ms": postcopy.get("fault_wait_p99_ms")}


def run_ferry(ctx, path, workload, logdir, cipher=None, binary=None, extra=(), recv_extra=()):
    """ferry receive + ferry send; figures from both JSON reports, and each agent's peak memory
    (sampled from /proc while they run). With `cipher`: both sides get a --key-file and the source
    --encrypt --cipher CIPHER. `binary` (default ctx.ferry) is the executable of BOTH sides, so two
    builds with different protocol versions never talk to each other; nothing else depends on it."""
    ferry = binary or ctx.ferry
    # The guest writes to the image it runs on: every run starts from a fresh copy of the original.
    subprocess.run(["cp", "--sparse=always", ctx.image, ctx.work_image], check=True)
    out = os.path.join(ctx.workdir, "ferry-dst.img")
    recv_json, send_json = os.path.join(logdir, "recv.json"), os.path.join(logdir, "send.json")
    spec = f"trace:{ctx.trace_file}" if workload == "trace" else workload
    prealloc = ["--prealloc", str(ctx.image_bytes)] if ctx.qemu_prealloc else []
    # A dirtying guest runs on at the destination (every contender alike), so its rate after the
    # migration is measured, and a post-copy guest touches pages that are not there yet.
    run_for = ["--run-for", ctx.run_after] if workload != "idle" else []
    key = ["--key-file", _bench_key(ctx)] if cipher else []
    recv = Proc(path.dst_prefix() + [ferry, "receive", "--listen", f"{path.dst_addr}:0", "--image", out,
                                     "--force", "--accept-timeout", "60s", "--json", recv_json, "-q"] + prealloc + key + run_for
                + list(recv_extra),
                os.path.join(logdir, "recv.log"))
    sampler = MemorySampler()
    exe = os.path.basename(ferry)
    sampler.watch("dst", recv, exe)
    try:
        host, port = recv.wait_listening(120)
        argv = [ferry, "send", "--image", ctx.work_image, "--to", f"{host}:{port}", "--workload", spec,
                "--vcpus", str(ctx.vcpus), "--downtime-ms", str(ctx.downtime_ms),
                "--timeout", f"{int(ctx.run_timeout)}s", "--json", send_json, "-q"]
        if workload != "idle":
            argv += ["--run-before", ctx.run_before]
        if cipher:
            argv += key + ["--encrypt", "--cipher", cipher]
        argv += list(extra)
        send = Proc(path.src_prefix() + argv, os.path.join(logdir, "send.log"))
        sampler.watch("src", send, exe)
        rc = send.wait(ctx.run_timeout + 60)
        if rc != 0:
            raise BenchError(f"ferry send exited {rc}: {send.tail(3)}")
        rc = recv.wait(30)
        if rc != 0:
            raise BenchError(f"ferry receive exited {rc}: {recv.tail(3)}")
        s, r = _load_json(send_json, "ferry send"), _load_json(recv_json, "ferry receive")
        if cipher and (s.get("encryption") != cipher or r.get("encryption") != cipher):
            raise BenchError(f"expected {cipher} on both sides, the reports say {s.get('encryption')} / {r.get('encryption')}")
        memory = sampler.stop()
        return {
            "total_ms": s["total_ms"], "receiver_ms": r.get("total_ms"), "downtime_ms": s["downtime_ms"],
            "setup_ms": s.get("setup_ms"), "wire_bytes": s["wire_bytes"], "rounds": s["rounds"],
            "mb_per_s": s["wire_bytes"] / 1e3 / s["total_ms"] if s["total_ms"] else None,
            "throttle_percent": s.get("max_throttle_percent", 0),
            "verified": bool(s.get("verified")) and bool(r.get("verified", True)),
            "pages": s.get("pages"), "binary": ferry, "detail": {"source": s, "destination": r},
            # each agent's peak RssAnon + RssFile (its own memory; the image is RssShmem), MiB
            "src_own_mib": memory["src"]["peak_own_mib"], "dst_own_mib": memory["dst"]["peak_own_mib"],
            "src_shmem_mib": memory["src"]["peak_shmem_mib"], "dst_shmem_mib": memory["dst"]["peak_shmem_mib"],
            "memory": memory,
            # post-copy's own figures (ferry-postcopy): the source's and the destination's view
            "postcopy": s.get("postcopy"), "postcopy_destination": r.get("postcopy"),
            # the blackout's forecast (a pre-copy switch-over) and the parts that missed it
            "predicted_downtime_ms": s.get("predicted_downtime_ms") if s.get("downtime_forecast") else None,
            "downtime_target_ms": s.get("downtime_target_ms"), "downtime_misses": s.get("downtime_misses"),
            **progress_figures(s, r),
        }
    finally:
        sampler.stop()
        recv.stop()
        _remove(out)
