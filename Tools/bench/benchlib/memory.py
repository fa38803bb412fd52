"""Peak memory of the agents: /proc/<pid>/status sampled every ~20 ms while they run.

What counts as the agent's own memory is RssAnon + RssFile (heap, stacks, buffers, the mapped
binary and libraries). The guest image is a file on /dev/shm mapped MAP_SHARED, so its pages
show up in RssShmem and are reported beside it, not in the agent's figure."""
import os
import threading
import time

FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")


def read_status(pid):
    """The FIELDS of /proc/<pid>/status in KiB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            values[name] = int(rest.split()[0])
    return values if "RssAnon" in values else None


def _exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def _children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def find_process(pid, exe):
    """`pid` itself if it runs `exe`, else the first descendant that does (a wrapper such as
    `ip netns exec` may fork rather than exec), else None."""
    todo = [pid]
    while todo:
        p = todo.pop(0)
        if _exe_name(p) == exe:
            return p
        todo += _children(p)
    return None


class Watched:
    def __init__(self, name, proc, exe):
        self.name, self.proc, self.exe = name, proc, exe
        self.pid = None          # the process running `exe`, once found
        self.samples = 0
        self.peak = {}           # field -> largest value seen (KiB)
        self.peak_own = 0        # largest RssAnon + RssFile seen (KiB)
        self.own_at_peak = None  # the sample where RssAnon + RssFile peaked

    def sample(self):
        if self.pid is None:
            self.pid = find_process(self.proc.pid, self.exe)
            if self.pid is None:
                return
        values = read_status(self.pid)
        if values is None:
            return
        self.samples += 1
        for k, v in values.items():
            self.peak[k] = max(self.peak.get(k, 0), v)
        own = values["RssAnon"] + values.get("RssFile", 0)
        if own >= self.peak_own:
            self.peak_own, self.own_at_peak = own, values

    def summary(self):
        mib = lambda kib: round(kib / 1024, 1) if kib is not None else None
        return {
            "pid": self.pid, "samples": self.samples,
            "peak_own_mib": mib(self.peak_own) if self.samples else None,
            "peak_anon_mib": mib(self.peak.get("RssAnon")), "peak_file_mib": mib(self.peak.get("RssFile")),
            "peak_shmem_mib": mib(self.peak.get("RssShmem")), "vm_hwm_mib": mib(self.peak.get("VmHWM")),
            # VmHWM (the kernel's own peak of the total) minus the largest RssShmem: another lower
            # bound of the agent's own peak, exact when the image stayed resident throughout
            # (a 20 ms sampler can miss a short spike; the kernel's high-water mark cannot)
            "hwm_minus_shmem_mib": mib(self.peak["VmHWM"] - self.peak.get("RssShmem", 0)) if "VmHWM" in self.peak else None,
            "at_own_peak": {k: mib(v) for k, v in (self.own_at_peak or {}).items()},
        }


class MemorySampler:
    """A background thread sampling the status of every watched process every `interval` s."""

    def __init__(self, interval=0.02):
        self.interval = interval
        self.watched = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def watch(self, name, proc, exe):
        """Samples `proc` (a procs.Proc), or its descendant running the executable named `exe`."""
        w = Watched(name, proc, exe)
        with self._lock:
            self.watched.append(w)
        w.sample()
        return w

    def _run(self):
        while not self._stop.wait(self.interval):
            with self._lock:
                for w in self.watched:
                    w.sample()

    def stop(self):
        """Stops sampling; returns {name: summary}."""
        self._stop.set()
        self._thread.join()
        return {w.name: w.summary() for w in self.watched}


def limit_mib(image_bytes):
    """The target for each agent's peak RSS beyond the guest image: 64 MiB + 1% of the image."""
    return 64 + image_bytes / (1 << 20) / 100
