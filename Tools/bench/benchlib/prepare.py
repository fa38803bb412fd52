"""Everything a run needs before the first measurement: builds, the image, the trace file,
QEMU (optionally installed) and matplotlib for the chart (installed on demand into .venv)."""
import os
import random
import shutil
import subprocess
import sys

from .procs import BenchError, run_checked
from . import qemu

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(BENCH_DIR))
VENV = os.path.join(BENCH_DIR, ".venv")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def build_ferry(skip):
    if not skip:
        log("building ferry (swift build -c release) …")
        run_checked(["swift", "build", "-c", "release", "--product", "ferry"], "swift build -c release", cwd=REPO)
    bin_dir = run_checked(["swift", "build", "-c", "release", "--show-bin-path"], "swift build --show-bin-path",
                          cwd=REPO).strip().splitlines()[-1]
    ferry = os.path.join(bin_dir, "ferry")
    if not os.access(ferry, os.X_OK):
        raise BenchError(f"{ferry} missing: run without --no-build")
    return ferry


def build_rawcopy(workdir):
    out = os.path.join(workdir, "rawcopy")
    run_checked(["gcc", "-O2", "-Wall", "-o", out, os.path.join(BENCH_DIR, "rawcopy.c")], "gcc -O2 rawcopy.c")
    return out


def create_image(ferry, workdir, size_text, seed):
    path = os.path.join(workdir, f"image-{size_text}.img")
    log(f"creating the {size_text} test image {path} (standard mix, seed {seed}) …")
    out = run_checked([ferry, "image", "create", path, "--size", size_text, "--seed", str(seed), "--force"],
                      "ferry image create")
    return path, out.strip()


def write_trace(path, page_count, seed, seconds=10, step_ms=10, pages_per_s=36_000):
    """A hot/cold trace: 85% of writes land in a hot set of 2% of the pages (which moves to a new
    place every 2.5 s), 15% anywhere in the image; ~36k pages/s ≈ 150 MB/s in all."""
    rng = random.Random(seed)
    hot_len = max(16, page_count // 50)
    per_line = max(1, pages_per_s * step_ms // 1000)
    lines = [f"# Tools/bench hot/cold trace: {page_count} pages, {seconds} s per pass, {per_line} pages per "
             f"{step_ms} ms line; 85% in a hot set of {hot_len} pages that moves every 2.5 s, 15% cold"]
    hot_start = 0
    for t in range(step_ms, seconds * 1000 + 1, step_ms):
        if t % 2500 == step_ms:
            hot_start = rng.randrange(0, page_count - hot_len)
        pages = [hot_start + rng.randrange(hot_len) if rng.random() < 0.85 else rng.randrange(page_count)
                 for _ in range(per_line)]
        lines.append(f"{t} " + " ".join(map(str, pages)))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def ensure_qemu(install):
    if qemu.installed():
        return True
    if not install:
        log(f"QEMU not installed: its columns will say so. To compare: {qemu.INSTALL_HINT}")
        return False
    log("installing qemu-system-x86 (apt-get) …")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-system-x86"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0 or not qemu.installed():
        log(f"apt-get install qemu-system-x86 failed: {r.stderr.strip()[-300:]}")
        return False
    return True


def chart_python_start(log_path):
    """Returns (python, pending installer Popen or None): a Python that has matplotlib, or one
    that will have it once the pip install started here in the background finishes."""
    for py in (sys.executable, os.path.join(VENV, "bin", "python")):
        if os.path.exists(py) and subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            return py, None
    py = os.path.join(VENV, "bin", "python")
    log("matplotlib not found: installing it into Tools/bench/.venv in the background (for the PNG chart)")
    cmd = (f"'{sys.executable}' -m venv '{VENV}' && '{py}' -m pip install -q --disable-pip-version-check matplotlib")
    logf = open(log_path, "wb")
    return py, subprocess.Popen(["sh", "-c", cmd], stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
