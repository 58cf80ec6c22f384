"""The cluster quickstart as a user runs it, timed (not a test).

Starts, on loopback: moto's S3 server (a bucket ``raypose``), an MLflow tracking server, and a
two-node Ray cluster (head + worker, each with its own session folder and 2 CPUs; every node's
environment has ``AWS_ENDPOINT_URL``, the S3 credentials and ``MLFLOW_TRACKING_URI``, as
``cluster/ray-cluster.yaml`` gives its nodes). Then, from a fresh clone of this repository,
runs and times::

    raypose submit --address http://127.0.0.1:PORT search_spaces/quickstart.yaml \\
        --set tune.storage_path=s3://raypose/study --set storage_path=s3://raypose/study \\
        --set data.root=CLONE/data/synth

and checks what the issue asks: the job exits 0; the MLflow server holds one parent run and
child runs with ``oks_map``, none RUNNING; ``best/checkpoint.pth`` is in the S3 study folder.
Everything it started is stopped by handle (the Ray nodes by their own temp folders).

Usage::

    python benchmarks/bench_cluster.py [--set tune.num_samples=3 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def stop_ray_nodes(folders: list[str]) -> None:
    """SIGTERM, then SIGKILL, the processes whose command line names one of ``folders``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if entry.name.isdigit() and any(f in cmdline for f in folders):
                    os.kill(int(entry.name), sig)
            except (OSError, ValueError):
                continue
        time.sleep(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `raypose submit --set` overrides, e.g. tune.num_samples=3")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rp-bench-"))
    s3_port, mlflow_port, gcs, dashboard = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    clone = work / "raypose"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env["PYTHONPATH"] = str(clone)  # the clone's code everywhere, as if installed from it
    node_env = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}"}
    servers: list[subprocess.Popen] = []
    heads = [tempfile.mkdtemp(prefix="rp-bh-", dir="/tmp"), tempfile.mkdtemp(prefix="rp-bw-", dir="/tmp")]
    try:
        servers.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        servers.append(subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", str(work / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_http(f"http://127.0.0.1:{s3_port}/moto-api/")
        import boto3

        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        s3.create_bucket(Bucket="raypose")
        wait_http(f"http://127.0.0.1:{mlflow_port}/health")
        subprocess.run(["ray", "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                        f"--temp-dir={heads[0]}", "--disable-usage-stats"], check=True, env=node_env, capture_output=True)
        subprocess.run(["ray", "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                        f"--temp-dir={heads[1]}"], check=True, env=node_env, capture_output=True)
        command = [sys.executable, "-m", "raypose", "submit", "--address", f"http://127.0.0.1:{dashboard}", "search_spaces/quickstart.yaml",
                   "--set", "tune.storage_path=s3://raypose/study", "--set", "storage_path=s3://raypose/study",
                   "--set", f"data.root={clone / 'data' / 'synth'}"]
        for override in args.overrides:
            command += ["--set", override]
        start = time.monotonic()
        proc = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
        (work / "submit.log").write_text(proc.stdout + proc.stderr)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{mlflow_port}")
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="raypose", Prefix="study/quickstart/best/").get("Contents", [])]
        print(json.dumps({
            "command": " ".join(command), "exit_code": proc.returncode, "wall_s": round(wall, 1),
            "parent_runs": len(runs) - len(children), "child_runs": len(children),
            "child_runs_with_oks_map": sum("oks_map" in r.data.metrics for r in children),
            "runs_left_running": sum(r.info.status == "RUNNING" for r in runs),
            "best_checkpoint_in_s3": "study/quickstart/best/checkpoint.pth" in keys,
            "log": str(work / "submit.log"),
        }, indent=2))
        return 0 if proc.returncode == 0 else 1
    finally:
        stop_ray_nodes(heads)
        for server in servers:
            stop_group(server)
        for folder in heads:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
