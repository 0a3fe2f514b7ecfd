"""A throw-away single-node SLURM cluster on localhost, for tests.

:func:`local_slurm` starts ``munged`` (as the ``munge`` user, with a fresh key and its own
socket), ``slurmctld -D`` and ``slurmd -D`` from Debian's ``slurm-wlm`` and ``munge``
packages with a minimal ``slurm.conf`` (no accounting, ``proctrack/linuxproc``,
``task/none``, one node named ``hostname -s`` at 127.0.0.1 with this machine's CPUs and
memory, free TCP ports), waits until the node is idle, and stops the three daemons it
started, by their process ids, on exit.  Client commands (``sbatch``, ``squeue``) find the
cluster through the ``SLURM_CONF`` variable of :attr:`SlurmCluster.env`.

:func:`unavailable_reason` says precisely why such a cluster cannot be started here (not
root, a missing binary or user), so tests can skip with that reason.  ``scripts/test.sh``
installs the packages when apt-get is usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Binaries the cluster needs (daemons live in /usr/sbin, clients in /usr/bin).
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel")
LOCK_FILE = Path(tempfile.gettempdir()) / "ketflow-slurm.lock"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


def which(name: str) -> str | None:
    """Full path of ``name`` on PATH or in the system binary folders."""
    return shutil.which(name, path=SEARCH_PATH)


def unavailable_reason() -> str | None:
    """Why a local SLURM cluster cannot be started here, or None when it can."""
    missing = [name for name in DAEMONS + CLIENTS if which(name) is None]
    if missing:
        return (f"SLURM/munge binaries not found: {', '.join(missing)} "
                "(apt-get install slurm-wlm munge; scripts/test.sh does it as root)")
    if os.geteuid() != 0:
        return "starting slurmd/slurmctld/munged needs root (slurmd runs jobs as their user)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (installed with Debian's munge package)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_line() -> str:
    """This machine's node definition as ``slurmd -C`` reports it (CPUs, sockets, memory)."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    fields = [f for f in line.split() if not f.startswith("NodeName=")]
    return " ".join([f"NodeName={socket.gethostname().split('.')[0]}", "NodeAddr=127.0.0.1", *fields])


def slurm_conf(root: Path, munge_socket: Path) -> str:
    """A minimal ``slurm.conf`` for one node on localhost (state and logs under ``root``)."""
    host = socket.gethostname().split(".")[0]
    return "\n".join([
        "ClusterName=ketflowtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        "SchedulerType=sched/builtin",
        # schedule every second (default: every 60 s, at most every 2 s): chained node jobs
        # start ~1 s after their dependencies instead of ~3 s
        "SchedulerParameters=sched_min_interval=100000,sched_interval=1",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        node_line(),
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


@dataclass
class SlurmCluster:
    """Handles of a running local cluster."""

    root: Path
    conf: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands and for ketflow submitting to this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf), LOGNAME=os.environ.get("LOGNAME", "root"))

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``sinfo``, ``squeue`` ...) against this cluster."""
        return subprocess.run([which(args[0]), *args[1:]], capture_output=True, text=True, env=self.env,
                              check=check, timeout=60)

    def logs(self, tail: int = 40) -> str:
        """The last lines of every daemon log (for failure messages)."""
        texts = []
        for path in sorted(self.root.rglob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            texts.append(f"== {path.name}\n" + "\n".join(lines))
        return "\n".join(texts)

    def _start(self, name: str, argv: list[str], **kwargs) -> None:
        log = open(self.root / f"{name}.stdout.log", "w")  # noqa: SIM115 - kept open for the daemon
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.env, **kwargs)
        log.close()

    def _check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"SLURM daemon(s) exited early {dead}:\n{self.logs()}")

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until the node accepts jobs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            out = self.run("sinfo", "-h", "-o", "%T", check=False)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM node did not become idle within {timeout:.0f} s:\n{self.logs()}")

    def stop(self) -> None:
        """Cancel remaining jobs, then stop the daemons this object started (by their pids)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            user = pwd.getpwuid(os.geteuid()).pw_name
            with contextlib.suppress(Exception):
                self.run("scancel", "-u", user, check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _start_munge(cluster: SlurmCluster) -> Path:
    """A munged of our own: fresh key and socket in a folder owned by the munge user."""
    munge = pwd.getpwnam("munge")
    folder = cluster.root / "munge"
    folder.mkdir(mode=0o755)
    os.chown(folder, munge.pw_uid, munge.pw_gid)
    key = folder / "munge.key"
    subprocess.run([which("mungekey"), "--create", f"--keyfile={key}", "--bits=1024"], check=True,
                   user=munge.pw_uid, group=munge.pw_gid, extra_groups=[], capture_output=True)
    sock = folder / "munge.socket"
    cluster._start("munged", [which("munged"), "--foreground", f"--socket={sock}", f"--key-file={key}",
                              f"--log-file={folder / 'munged.log'}", f"--pid-file={folder / 'munged.pid'}",
                              f"--seed-file={folder / 'munged.seed'}"],
                   user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
    deadline = time.monotonic() + 20
    while not sock.exists():
        cluster._check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"munged did not create {sock}:\n{cluster.logs()}")
        time.sleep(0.1)
    return sock


@contextlib.contextmanager
def local_slurm():
    """Start a local single-node SLURM cluster; yields a :class:`SlurmCluster`; stops it on exit.

    Its files live in a fresh folder under the system temporary directory (world-traversable,
    as munged requires of its socket path); the folder is removed afterwards.  A lock file
    makes a second caller (another pytest-xdist worker) wait until this cluster is stopped.
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    with open(LOCK_FILE, "w") as lock:  # one test cluster at a time on this machine
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = Path(tempfile.mkdtemp(prefix="ketflow-slurm-"))
        root.chmod(0o755)
        cluster = SlurmCluster(root=root, conf=root / "slurm.conf")
        try:
            for sub in ("state", "spool"):
                (root / sub).mkdir()
            sock = _start_munge(cluster)
            cluster.conf.write_text(slurm_conf(root, sock))
            cluster._start("slurmctld", [which("slurmctld"), "-D", "-f", str(cluster.conf)])
            cluster._start("slurmd", [which("slurmd"), "-D", "-f", str(cluster.conf)])
            cluster.wait_idle()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
