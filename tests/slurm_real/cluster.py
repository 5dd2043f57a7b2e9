"""A SLURM cluster on localhost for the SLURM tier (`make test-slurm`): one node, or several
nodes on this one machine (one slurmd per node, each on its own port).

Debian's slurm-wlm daemons run in the foreground as children of this process, with every file
(munge key and socket, slurm.conf, state, spool, logs) under one folder, so nothing outside it is
touched and `stop()` ends exactly the daemons `start()` began. Needs root (slurmd launches jobs as
their users) and the `munge` user the package creates.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol")


def missing_requirements() -> str | None:
    """Why this machine cannot run the cluster, or None when it can."""
    if os.geteuid() != 0:
        return "the SLURM tier needs root (slurmd starts jobs as their users)"
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return f"missing {', '.join(absent)}: `apt-get install slurm-wlm munge` (Debian) provides them"
    return None


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 1024  # leave 1 GiB to the system
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    """munged, slurmctld and a slurmd per node, partition ``partition``. The first node is named
    after this host, so the address Lightning derives from a job's node list resolves; the others
    are ``<host>-2``, ... on ports after the first slurmd's."""

    def __init__(
        self, folder: Path, partition: str = "debug", ports: tuple[int, int] = (6917, 6918), nodes: int = 1
    ) -> None:
        self.folder = Path(folder)
        self.partition = partition
        self.ports = ports
        self.node = socket.gethostname().split(".")[0]
        self.nodes = [self.node] + [f"{self.node}-{index}" for index in range(2, nodes + 1)]
        self.conf = self.folder / "slurm.conf"
        self.munge_dir = self.folder / "munge"
        self.processes: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM's commands (and the jobs, which inherit it)."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def _write_conf(self) -> None:
        folder = self.folder
        for name in ("state", "spool", "log"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        lines = {
            "ClusterName": "visionthink",
            "SlurmctldHost": self.node,
            "SlurmUser": "root",
            "SlurmctldPort": self.ports[0],
            "SlurmdPort": self.ports[1],
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_dir / 'munge.socket'}",
            "StateSaveLocation": folder / "state",
            # %n: each node's slurmd keeps its own files
            "SlurmdSpoolDir": folder / "spool" / "%n",
            "SlurmctldPidFile": folder / "slurmctld.pid",
            "SlurmdPidFile": folder / "slurmd-%n.pid",
            "SlurmctldLogFile": folder / "log" / "slurmctld.log",
            "SlurmdLogFile": folder / "log" / "slurmd-%n.log",
            # no cgroups in a container: track job processes through /proc
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "ReturnToService": 2,
            "SchedulerType": "sched/backfill",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none",
            # no slurmdbd: sacct has nothing; finished jobs stay in `scontrol show job` for MinJobAge
            "AccountingStorageType": "accounting_storage/none",
            "MinJobAge": 3600,
            # what scancel gives a job between SIGTERM and SIGKILL
            "KillWait": 60,
        }
        text = "".join(f"{key}={value}\n" for key, value in lines.items())
        for index, node in enumerate(self.nodes):
            # Every node offers the whole machine: each slurmd checks the configuration against it
            text += (f"NodeName={node} NodeHostname={self.node} NodeAddr=127.0.0.1 Port={self.ports[1] + index} "
                     f"CPUs={os.cpu_count()} RealMemory={memory_mb()} State=UNKNOWN\n")  # fmt: skip
        text += f"PartitionName={self.partition} Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP\n"
        self.conf.write_text(text)

    def _start_munge(self) -> None:
        # munged runs as the munge user and wants its key private and its socket folder traversable
        self.munge_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.munge_dir, "munge", "munge")
        self.munge_dir.chmod(0o711)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, user="munge")
        files = {name: self.munge_dir / name for name in ("munge.socket", "munged.pid", "munged.log", "munged.seed")}
        self._spawn(
            [
                "munged", "--foreground", f"--socket={files['munge.socket']}", f"--key-file={key}",
                f"--pid-file={files['munged.pid']}", f"--log-file={files['munged.log']}",
                f"--seed-file={files['munged.seed']}",
            ],
            user="munge",
        )  # fmt: skip
        self._wait(lambda: files["munge.socket"].exists(), "munged did not create its socket")

    def _spawn(self, command: list[str], name: str | None = None, **kwargs) -> None:
        log = open(self.folder / "log" / f"{name or Path(command[0]).name}.out", "ab")  # noqa: SIM115 (kept by the child)
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, **kwargs))

    def _wait(self, ready, message: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        raise RuntimeError(f"{message} (logs in {self.folder / 'log'})")

    def node_states(self) -> list[str]:
        result = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%T"], capture_output=True, text=True, env=self.env
        )
        return result.stdout.split()

    def start(self) -> LocalSlurm:
        self._write_conf()
        self._start_munge()
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        for node in self.nodes:
            (self.folder / "spool" / node).mkdir(parents=True, exist_ok=True)
            self._spawn(["slurmd", "-D", "-N", node, "-f", str(self.conf)], name=f"slurmd-{node}")
        self._wait(self._nodes_ready, "the nodes did not become idle")
        return self

    def _nodes_ready(self) -> bool:
        states = self.node_states()
        return len(states) == len(self.nodes) and set(states) <= {"idle", "mixed", "allocated"}

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started, newest first."""
        subprocess.run(["scancel", "--full", f"--partition={self.partition}"], env=self.env, check=False)
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def job_fields(self, job_id: str) -> dict[str, str]:
        """`scontrol show job`'s fields (JobState, NumNodes, NodeList, ...)."""
        result = subprocess.run(
            ["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True, env=self.env
        )
        return dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)

    def job_state(self, job_id: str) -> str:
        return self.job_fields(job_id).get("JobState", "UNKNOWN")

    def job_states(self, job_ids: list[str], timeout: float = 120) -> dict[str, str]:
        """Each job's final state from slurmctld (kept for MinJobAge after it ends), once the
        jobs have left COMPLETING (a cancelled job's processes take a moment to go)."""
        deadline = time.time() + timeout
        while True:
            states = {job_id: self.job_state(job_id) for job_id in job_ids}
            if "COMPLETING" not in states.values() or time.time() > deadline:
                return states
            time.sleep(1)
