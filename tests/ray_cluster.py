"""A real two-node Ray cluster for the tests, on loopback only.

Ray binds every interface and talks over the host's own address whatever
``--node-ip-address`` says, so the nodes run in a private network namespace (``unshare
-n``, only ``lo`` up) where it falls back to 127.0.0.1; commands that talk to the cluster
(the ``facerec`` driver) join that namespace with ``nsenter``. Nothing leaves the machine,
and the fixed head port cannot collide with another run's (each namespace has its own).

Nodes are stopped by their PID: SIGTERM, then SIGKILL of whatever is left in their
session. ``ray stop`` is never used: it kills every Ray process on the machine by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
#: Outside Ray's worker port range (10002-19999).
HEAD_PORT = 26379
ADDRESS = f"127.0.0.1:{HEAD_PORT}"


#: Runs in the new namespace: bring ``lo`` up (``ip link set lo up`` without needing
#: iproute2), say so, then hold the namespace open until killed.
_LOOPBACK_UP = """
import fcntl, signal, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]  # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
print("up", flush=True)
signal.pause()
"""


def _session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (what a node started with setsid left)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            out.append(int(d.name))
    return out


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"ray node exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"ray node not up after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


class RayCluster:
    """A head and ``workers`` worker nodes of ``cpus`` CPUs each, in one private network
    namespace; :meth:`run` starts a command in it."""

    def __init__(self, workers: int = 1, cpus: int = 1, object_store: int = 300_000_000) -> None:
        self.workers, self.cpus, self.object_store = workers, cpus, object_store
        # short: Ray's unix socket paths live under it and must stay under 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="fr-ray-", dir="/tmp"))
        self.holder: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_BACKEND_LOG_LEVEL": "error",
                    # a lost node is noticed in about 3 s instead of 15
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}

    def ns(self) -> list[str]:
        """The command prefix that enters the cluster's network namespace."""
        if self.holder is None:
            raise RuntimeError("the cluster is not started")
        return ["nsenter", "-t", str(self.holder.pid), "-n"]

    def start(self) -> RayCluster:
        self.holder = subprocess.Popen(["unshare", "-n", sys.executable, "-c", _LOOPBACK_UP], stdout=subprocess.PIPE,
                                       text=True)
        if self.holder.stdout is None or self.holder.stdout.readline().strip() != "up":
            raise RuntimeError("could not make a private network namespace (unshare -n needs root)")
        self._node("head", ["--head", "--port", str(HEAD_PORT), "--include-dashboard=false"])
        for i in range(self.workers):  # after the head is up: a worker started before retries forever
            self._node(f"worker{i}", ["--address", ADDRESS])
        return self

    def _node(self, name: str, args: list[str]) -> None:
        log = self.root / f"{name}.log"
        temp = self.root / name
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*self.ns(), RAY, "start", *args, "--num-cpus", str(self.cpus), "--object-store-memory",
                 str(self.object_store), "--disable-usage-stats", "--temp-dir", str(temp), "--block"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.nodes[name] = proc
        _wait_for(log, "Ray runtime started", proc, 120)

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (the cluster is reachable at :data:`ADDRESS`)."""
        return subprocess.run([*self.ns(), *argv], capture_output=True, text=True, env=self.env, timeout=timeout)

    def popen(self, *argv: str) -> subprocess.Popen:
        return subprocess.Popen([*self.ns(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env)

    def worker_logs(self, name: str) -> str:
        """Everything the node's worker processes printed (``worker-*.out``)."""
        logs = sorted((self.root / name / "session_latest").glob("logs/worker-*.out"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def kill(self, name: str) -> None:
        """SIGKILL a node and everything it started, as if its machine had died."""
        proc = self.nodes.pop(name)
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)

    def stop_node(self, name: str) -> None:
        """SIGTERM the node; SIGKILL what is left of its session after 15 s."""
        proc = self.nodes.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(10)

    def stop(self) -> None:
        for name in [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else []):
            self.stop_node(name)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
