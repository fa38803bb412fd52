"""Child processes the benchmark starts, and ending them (only those, by their own ids)."""
import os
import re
import signal
import subprocess
import time

LISTENING = re.compile(r"listening on ([0-9.]+):(\d+)")


class BenchError(Exception):
    """A run or a preparation step failed; the message says what and, where known, the fix."""


class Proc:
    """One started child: its stderr goes to a log file; it runs in its own process group."""

    live = []  # every Proc not yet reaped, so cleanup can end them whatever happens

    def __init__(self, argv, log_path, cwd=None):
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                      cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid
        Proc.live.append(self)

    def output(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def tail(self, lines=6):
        return " | ".join(self.output().strip().splitlines()[-lines:])

    def wait_listening(self, timeout):
        """Waits for 'listening on HOST:PORT' in the output; returns (host, port)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTENING.search(self.output())
            if m:
                return m.group(1), int(m.group(2))
            if self.popen.poll() is not None:
                raise BenchError(f"{os.path.basename(self.argv_name())} exited with {self.popen.returncode} "
                                 f"before listening: {self.tail()}")
            time.sleep(0.02)
        raise BenchError(f"{self.argv_name()} did not print 'listening on' within {timeout:.0f} s")

    def argv_name(self):
        # skip an "ip netns exec NAME" prefix
        return self.argv[4] if self.argv[:3] == ["ip", "netns", "exec"] else self.argv[0]

    def wait(self, timeout):
        """Waits for exit; on timeout ends the process and raises."""
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise BenchError(f"{os.path.basename(self.argv_name())} still running after {timeout:.0f} s; ended it")
        self._reaped()
        return rc

    def stop(self, grace=3.0):
        """Ends this process group: SIGTERM, then SIGKILL after `grace` seconds."""
        if self.popen.poll() is None:
            for sig, wait_for in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout=wait_for)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # (an exited leader is left alone: its id may already belong to someone else)
        self._reaped()

    def _reaped(self):
        if self in Proc.live:
            Proc.live.remove(self)
        if not self.log.closed:
            self.log.close()

    @classmethod
    def stop_all(cls):
        for p in list(cls.live):
            p.stop(grace=1.0)


def run_checked(argv, what, timeout=None, cwd=None, quiet=True):
    """Runs a short command to completion; raises BenchError naming `what` on failure."""
    try:
        r = subprocess.run(argv, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    except FileNotFoundError:
        raise BenchError(f"{what}: {argv[0]} not found")
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: still running after {timeout} s")
    if r.returncode != 0:
        out = (r.stdout or b"").decode(errors="replace").strip().splitlines()[-8:]
        raise BenchError(f"{what} failed (exit {r.returncode}): " + " | ".join(out))
    return (r.stdout or b"").decode(errors="replace")
