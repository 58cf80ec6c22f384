"""The shipped cluster files, read as a deployer's tools read them: `cluster/ray-cluster.yaml`
through Ray's own autoscaler config preparation and schema (what `ray up` runs), then the rules
a working deployment needs; `cluster/rayjob.yaml` against the fields of KubeRay's ray.io/v1
RayJob and RayCluster specs, with the trial its entrypoint submits checked against the
autoscaler's maximum."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster() -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    prepared = prepare_config(copy.deepcopy(raw))  # defaults merged, as `ray up` does
    validate_config(prepared)  # Ray's ray-schema.json
    return prepared


def worker_types(config: dict) -> dict[str, dict]:
    """The node types that run Train workers: every type with GPUs, or any non-head type."""
    head = config["head_node_type"]
    return {name: t for name, t in config["available_node_types"].items()
            if name != head or t.get("resources", {}).get("GPU", 0) > 0}


def trial_of(command: str) -> object:
    """The search space a `raypose tune|submit SPACE --set ...` command runs, loaded as raypose does."""
    from raypose.tuning.space import load_search_space

    words = shlex.split(command)
    args = iter(words[words.index("raypose") + 2:])
    space, overrides = None, []
    for word in args:
        if word in ("--set", "--address", "--working-dir"):
            value = next(args)
            if word == "--set":
                overrides.append(value)
        elif not word.startswith("-") and space is None:
            space = word
    return load_search_space(REPO / space, overrides)


def commented_command(text: str, start: str) -> str:
    """A shell command shown in a file's comments, its continuation lines (ending in ``\\``) joined."""
    lines = [line.lstrip("# ").rstrip() for line in text.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.startswith(start))
    command = []
    for line in lines[at:]:
        command.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            return " ".join(command)
    raise AssertionError(f"{start}: no end")


def test_every_node_type_has_a_role_that_reaches_s3_and_the_registry(ray_cluster):
    for name, node_type in ray_cluster["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Arn") or profile.get("Name"), f"{name}: no IamInstanceProfile"
    assert any("ecr get-login-password" in c for c in ray_cluster["initialization_commands"])


def test_the_data_is_mounted_on_every_node_before_its_container_starts(ray_cluster):
    assert "-v /data:/data" in ray_cluster["docker"]["run_options"]
    mounts = [c for c in ray_cluster["initialization_commands"] if re.search(r"\bmount\b.* /data\b", c)]
    assert mounts, "no initialization command mounts /data on the host"
    assert all("mountpoint -q /data" in c for c in mounts)  # idempotent: nodes are set up again on restart


def test_the_mlflow_store_outlives_the_head(ray_cluster):
    commands = " ".join(ray_cluster["head_start_ray_commands"])
    store = re.search(r"--backend-store-uri\s+(\S+)", commands)[1]
    assert store.startswith(("postgresql://", "mysql://")), store
    assert re.search(r"--artifacts-destination\s+s3://", commands)
    assert "psycopg2" in (REPO / "Dockerfile").read_text()  # the driver for that store, in the image


def test_gpu_types_hold_a_whole_trial_and_spot_nodes_never_run_a_driver(ray_cluster):
    types = worker_types(ray_cluster)
    spot = {n for n, t in types.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"}
    on_demand = set(types) - spot
    assert spot and on_demand
    for name, node_type in types.items():
        assert node_type["resources"]["GPU"] == 8, name
        assert ("on_demand" in node_type["resources"]) == (name in on_demand), name
    head = ray_cluster["available_node_types"][ray_cluster["head_node_type"]]
    assert head["resources"].get("on_demand", 0) > 0


def test_the_readme_search_fits_the_autoscalers_maximum(ray_cluster):
    space = trial_of(commented_command((REPO / "cluster" / "ray-cluster.yaml").read_text(), "raypose submit"))
    base = space.base
    assert space.tune.trial_resources.get("on_demand", 0) > 0
    types = worker_types(ray_cluster)
    per_trial = base.workers * base.gpus_per_worker
    assert per_trial <= max(t["resources"]["GPU"] for t in types.values())  # packs onto one node
    most = sum(t["resources"]["GPU"] * t["max_workers"] for t in types.values())
    assert space.tune.max_concurrent * per_trial <= most
    assert sum(t["max_workers"] for t in types.values()) <= ray_cluster["max_workers"]


# KubeRay's ray.io/v1 API (ray-operator/apis/ray/v1/*_types.go): the fields each spec accepts.
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
               "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
               "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule"}
RAYCLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
                   "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions", "upgradeStrategy"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
                "scaleStrategy", "idleTimeoutSeconds", "suspend"}
AUTOSCALER_OPTIONS = {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext",
                      "idleTimeoutSeconds", "upscalingMode", "version"}


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((REPO / "cluster" / "rayjob.yaml").read_text())


def test_the_rayjob_uses_only_kuberay_fields(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    assert set(cluster) <= RAYCLUSTER_SPEC, set(cluster) - RAYCLUSTER_SPEC
    assert set(cluster["headGroupSpec"]) <= HEAD_GROUP
    assert set(cluster.get("autoscalerOptions", {})) <= AUTOSCALER_OPTIONS
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP, set(group) - WORKER_GROUP
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]


def test_the_rayjob_autoscales_resumes_and_reaches_s3(rayjob):
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert spec["backoffLimit"] >= 1
    assert "--resume" in shlex.split(spec["entrypoint"])
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        assert template["spec"].get("serviceAccountName"), "every pod needs the role that reaches S3 (IRSA)"
        mounts = {m["mountPath"] for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])}
        assert "/data" in mounts


def test_the_trial_the_rayjob_submits_fits_its_autoscalers_maximum(rayjob):
    spec = rayjob["spec"]
    space = trial_of(spec["entrypoint"])
    base = space.base
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]

    def gpus(group: dict) -> int:
        return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in group["template"]["spec"]["containers"])

    per_trial = base.workers * base.gpus_per_worker
    assert per_trial <= max(gpus(g) for g in groups)  # one pod holds a whole trial
    assert space.tune.max_concurrent * per_trial <= sum(gpus(g) * g["maxReplicas"] for g in groups)
    spot = [g for g in groups if g["template"]["spec"].get("nodeSelector", {}).get("eks.amazonaws.com/capacityType") == "SPOT"]
    assert spot and all("on_demand" not in g["rayStartParams"].get("resources", "") for g in spot)
    assert "on_demand" in spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["resources"]
    assert space.tune.trial_resources.get("on_demand", 0) > 0
