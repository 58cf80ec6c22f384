"""Ray clusters on loopback for the tests, started and stopped by their own handles.

Each node is a `ray start` with its own temp (session) folder, as separate machines have; an
autoscaling cluster is Ray's own autoscaler with its fake multi-node provider (real raylets
added and removed on demand). Nothing here runs `ray stop`, which would end every Ray process on
the machine: a cluster stops the processes whose command lines name its own folders.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port


@dataclass
class LoopbackCluster:
    """A running cluster: its GCS address (``RAY_ADDRESS`` for a driver), its Jobs API address,
    the environment its nodes run with, and the temp folders that identify its processes."""

    gcs: str
    dashboard: str
    env: dict[str, str]
    folders: list[str] = field(default_factory=list)

    @property
    def driver_env(self) -> dict[str, str]:
        """The environment of a process that runs on this cluster as a Ray driver."""
        return {**self.env, "RAY_ADDRESS": self.gcs}

    def stop(self) -> None:
        stop_ray_nodes(self.folders)
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)

    def head_logs(self) -> str:
        """The end of the head node's job logs (for a failed submission)."""
        logs = Path(self.folders[0]) / "session_latest" / "logs"
        parts = []
        for name in ("dashboard_agent.log", "dashboard_JobHead.log", "monitor.log"):
            text = (logs / name).read_text(errors="replace") if (logs / name).is_file() else "(none)"
            parts.append(f"\n== {name}\n" + "\n".join(line for line in text.splitlines() if "ResourceRoute" not in line)[-3000:])
        return "".join(parts)

    def train_worker_pids(self) -> list[int]:
        """The pids of the live Ray Train worker actors on this cluster (from the State API)."""
        from ray.util.state import list_actors

        actors = list_actors(address=self.dashboard, filters=[("class_name", "=", "RayTrainWorker"),
                                                             ("state", "=", "ALIVE")], raise_on_missing_output=False)
        return [int(a.pid) for a in actors if a.pid]

    def alive_nodes(self) -> int:
        from ray.util.state import list_nodes

        return len(list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False))


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra or {})
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray >= 2.59 turns token authentication on for clusters started with `ray start`; a loopback
    # test cluster runs without it (head, worker and job client alike).
    env["RAY_AUTH_MODE"] = "disabled"
    # processes in a job's uploaded working_dir import raypose from there only (see the file)
    upload_only = str(Path(__file__).parent / "upload_only")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (upload_only, env.get("PYTHONPATH", "")) if p)
    return env


def ray_bin() -> str:
    return shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"


def node_ports() -> list[str]:
    """Free ports for one node's agents. Separate machines would all use Ray's defaults (the
    dashboard agent's 52365, say); nodes sharing this machine, and the tests' in-process Ray,
    would collide on them and leave the head without a job agent."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


def _temp(prefix: str) -> str:
    # Ray's socket paths must stay under 108 characters: pytest's tmp_path is too deep.
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def start_head(env: dict[str, str], cpus: float, gpus: int = 0, extra: list[str] | None = None,
               gcs_port: int | None = None, folders: tuple[str, ...] = ()) -> LoopbackCluster:
    """A head node (its own session folder); ``folders`` are more folders the cluster owns."""
    gcs, dashboard = gcs_port or free_port(), free_port()
    temp = _temp("rp-h-")
    cluster = LoopbackCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env, [temp, *folders])
    head = [ray_bin(), "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus:g}",
            f"--num-gpus={gpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}", f"--temp-dir={temp}", "--disable-usage-stats", *node_ports(), *(extra or [])]
    try:
        subprocess.run(head, check=True, env=env, capture_output=True, timeout=180)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def add_worker_node(cluster: LoopbackCluster, cpus: float, resources: dict[str, float] | None = None) -> None:
    """A worker node of its own (own session folder), joined to ``cluster``."""
    temp = _temp("rp-w-")
    cluster.folders.append(temp)
    worker = [ray_bin(), "start", f"--address={cluster.gcs}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus:g}",
              f"--temp-dir={temp}", *node_ports()]
    if resources:
        worker.append(f"--resources={json.dumps(resources)}")
    subprocess.run(worker, check=True, env=cluster.env, capture_output=True, timeout=180)


def autoscaling_config(gcs: str, worker_cpus: float, max_workers: int) -> dict:
    """An autoscaler config for Ray's fake multi-node provider (its own template is not in the
    wheel): a head that runs no trial workers and a worker type added on demand, from 0 nodes."""
    return {
        "cluster_name": "raypose-test",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs},
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": worker_cpus}, "node_config": {}, "min_workers": 0,
                           "max_workers": max_workers},
        },
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


def start_autoscaling_cluster(env: dict[str, str], head_cpus: float, worker_cpus: float,
                              max_workers: int) -> LoopbackCluster:
    """A head with Ray's autoscaler on the fake multi-node provider: worker nodes are real raylets
    the autoscaler starts (and ends) on this machine as trials ask for them."""
    gcs = free_port()
    folder = _temp("rp-a-")
    config = Path(folder) / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config(f"127.0.0.1:{gcs}", worker_cpus, max_workers)))
    env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    return start_head(env, head_cpus, extra=[f"--autoscaling-config={config}"], gcs_port=gcs, folders=(folder,))


def own_ray_processes(folders: list[str]) -> list[int]:
    """The pids of the Ray nodes whose temp folders are ``folders`` (Ray's processes name their
    session or temp folder on their command line), with all their descendants."""
    parents: dict[int, int] = {}
    own: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if any(folder in cmdline for folder in folders):
            own.add(int(entry.name))
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in own} - own
        own |= children
        grew = bool(children)
    return sorted(own)


def stop_ray_nodes(folders: list[str]) -> None:
    """Stop only the Ray nodes started with these temp folders (`ray stop` would end every Ray
    process on the machine, other users' included): SIGTERM, then SIGKILL what is left."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        pids = own_ray_processes(folders)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            time.sleep(0.5)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_for_jobs_api(address: str) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + 60
    while True:  # the dashboard's job agent comes up a few seconds after `ray start`
        try:
            JobSubmissionClient(address).list_jobs()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
