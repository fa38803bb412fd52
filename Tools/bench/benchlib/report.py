"""Medians, ratios, the printed table and the JSON file."""
import json
import statistics

RAW = "raw"
QEMU = "qemu-multifd"
FERRY, BASELINE = "ferry", "ferry-baseline"


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs, plan, qemu_available):
    """One row per (path, workload, contender) of the plan, in plan order."""
    rows = []
    by_key = {}
    for r in runs:
        by_key.setdefault((r["path"], r["workload"], r["contender"]), []).append(r)
    for path, workload, contender in plan:
        rs = by_key.get((path, workload, contender), [])
        ok = [r for r in rs if r["ok"]]
        row = {"path": path, "workload": workload, "contender": contender, "runs": len(rs), "ok": len(ok),
               "errors": sorted({r["error"] for r in rs if not r["ok"]})}
        for key in ("total_ms", "downtime_ms", "setup_ms", "wire_bytes", "rounds", "throttle_percent", "mb_per_s",
                    "src_own_mib", "dst_own_mib", "src_shmem_mib", "dst_shmem_mib", "slowdown_pct", "slowdown_to_end_pct",
                    "progress_before", "progress_during", "progress_after", "fault_p50_ms", "fault_p99_ms"):
            row[key] = _stats([r.get(key) for r in ok])
        row["verified"] = [r.get("verified") for r in ok]
        if contender.startswith("qemu") and not qemu_available:
            row["note"] = "not installed"
        rows.append(row)
    index = {(r["path"], r["workload"], r["contender"]): r for r in rows}
    for row in rows:
        raw = index.get((row["path"], "idle", RAW))
        qemu = index.get((row["path"], row["workload"], QEMU))
        row["total_vs_raw"] = _ratio(row, raw, "total_ms")
        row["total_vs_qemu"] = _ratio(row, qemu, "total_ms")
        row["downtime_vs_qemu"] = _ratio(row, qemu, "downtime_ms")
        if row["contender"] == FERRY:
            base = index.get((row["path"], row["workload"], BASELINE))
            if base:
                row["total_vs_baseline"] = _ratio(row, base, "total_ms")
                row["downtime_vs_baseline"] = _ratio(row, base, "downtime_ms")
    return rows


def forecast_lines(runs):
    """Every ferry run that switched over from pre-copy: whether its downtime kept to
    max(target, 1.5 × predicted), and the parts its report names as missing the forecast."""
    held = [r for r in runs if r.get("ok") and r.get("predicted_downtime_ms") is not None]
    if not held:
        return []
    within = [r for r in held if r["downtime_ms"] <= max(r["downtime_target_ms"] or 0, 1.5 * r["predicted_downtime_ms"])]
    out = [f"blackout forecast: {len(within)} of {len(held)} ferry pre-copy runs kept downtime ≤ max(target, 1.5 × predicted)"]
    for r in held:
        for miss in r.get("downtime_misses") or []:
            out.append(f"  {r['contender']} {r['path']} {r['workload']} run {r.get('run', '?')}: {miss['part']} "
                       f"{miss['actual_ms']:.1f} ms against {miss['predicted_ms']:.1f} forecast: {miss['cause']}")
    return out


def baseline_lines(rows):
    """Per path and workload: ferry's median total and downtime ÷ ferry-baseline's (--baseline-ferry)."""
    index = {(r["path"], r["workload"], r["contender"]): r for r in rows}
    out = ["ferry/ferry-baseline (median ÷ median, same path and workload; runs alternated):"]
    for r in rows:
        if r["contender"] != FERRY:
            continue
        base = index.get((r["path"], r["workload"], BASELINE))
        if not base:
            continue
        parts = []
        for key, name, digits in (("total_ms", "total", 0), ("downtime_ms", "downtime", 1)):
            ratio = r.get(key.replace("_ms", "_vs_baseline"))
            parts.append(f"{name} {_x3(ratio)} ({_range(r[key], digits)} vs {_range(base[key], digits)} ms)")
        out.append(f"  {r['path']:<9} {r['workload']:<16} " + ", ".join(parts) +
                   f"  [runs ok {r['ok']}/{r['runs']} vs {base['ok']}/{base['runs']}]")
    if len(out) == 1:
        out.append("  — (needs ferry and ferry-baseline in --contenders)")
    return "\n".join(out)


def _x3(v):
    return "—" if v is None else f"{v:.3f}×"


def _ratio(row, base, key):
    if not base or not row.get(key) or not base.get(key) or not base[key]["median"]:
        return None
    return row[key]["median"] / base[key]["median"]


def _range(s, digits=0):
    if not s:
        return "—"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} [{f.format(s['min'])}–{f.format(s['max'])}]"


def _x(v):
    return "—" if v is None else f"{v:.2f}×"


def _mib(s, limit):
    """Peak own RSS: median [max] of the runs' peaks, '!' when the max is over the limit."""
    if not s:
        return "—"
    over = "!" if limit is not None and s["max"] > limit else ""
    return f"{s['median']:.0f} [{s['max']:.0f}]{over}"


def table(rows, qemu_available, rss_limit_mib=None):
    head = ["path", "workload", "contender", "ok", "total ms median [min–max]", "downtime ms median [min–max]",
            "wire MB", "rounds", "thr%", "slow%", "fault ms p50/p99", "total/raw", "total/QEMU", "downtime/QEMU", "src MiB", "dst MiB"]
    lines = []
    for r in rows:
        if r.get("note"):
            cells = [r["path"], r["workload"], r["contender"], "—", r["note"], r["note"], "—", "—", "—", "—", "—",
                     "—", "—", "—", "—", "—"]
        else:
            dt_digits = 1 if r["downtime_ms"] and r["downtime_ms"]["max"] < 100 else 0
            wire = f"{r['wire_bytes']['median'] / 1e6:.0f}" if r["wire_bytes"] else "—"
            rounds = f"{r['rounds']['median']:g}" if r["rounds"] else "—"
            thr = f"{r['throttle_percent']['max']:g}" if r["throttle_percent"] else "—"
            no_qemu = "not installed" if not qemu_available else "—"
            slow = f"{r['slowdown_pct']['median']:.0f}" if r.get("slowdown_pct") else "—"
            faults = (f"{r['fault_p50_ms']['median']:.2f}/{r['fault_p99_ms']['median']:.2f}"
                      if r.get("fault_p50_ms") and r.get("fault_p99_ms") else "—")
            cells = [r["path"], r["workload"], r["contender"], f"{r['ok']}/{r['runs']}", _range(r["total_ms"]),
                     _range(r["downtime_ms"], dt_digits), wire, rounds, thr, slow, faults, _x(r["total_vs_raw"]),
                     _x(r["total_vs_qemu"]) if r["total_vs_qemu"] is not None else no_qemu if r["workload"] == "idle" else "—",
                     _x(r["downtime_vs_qemu"]) if r["downtime_vs_qemu"] is not None
                     else no_qemu if r["workload"] == "idle" and r["downtime_ms"] else "—",
                     _mib(r.get("src_own_mib"), rss_limit_mib), _mib(r.get("dst_own_mib"), rss_limit_mib)]
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [fmt(head), fmt(["-" * w for w in widths])]
    last_path = None
    for cells in lines:
        if last_path is not None and cells[0] != last_path:
            out.append("")
        last_path = cells[0]
        out.append(fmt(cells))
    errors = [f"  {r['contender']} {r['path']} {r['workload']}: {e}" for r in rows for e in r["errors"]
              if e != "not installed"]
    if errors:
        out += ["", "failed runs:"] + errors
    return "\n".join(out)


def write_json(path, meta, runs, rows):
    with open(path, "w") as f:
        json.dump({"meta": meta, "summary": rows, "runs": runs}, f, indent=1, default=str)
