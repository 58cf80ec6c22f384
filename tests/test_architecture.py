"""Layer boundaries, checked on the source: one module talks to Ray Train, one to Ray Tune, one to
MLflow, and the pure modules (model, data, evaluation, analysis, video smoothing) reach none of
them: not in their own code (lazy imports inside functions count too), nor by importing them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raypose"

# external package prefix -> the only module allowed to import it
OWNERS = {
    "ray.train": "raypose.training.ray_train",
    "ray.tune": "raypose.tuning.search",
    "mlflow": "raypose.experiment_log",
}
PURE = ("raypose.model", "raypose.schema", "raypose.data", "raypose.evaluation", "raypose.analysis",
        "raypose.video.smoothing", "raypose.tuning.trials", "raypose.tuning.final", "raypose.tuning.importance",
        "raypose.tuning.plots", "raypose.tuning.report_html", "raypose.storage",
        "raypose.training.resources")
FORBIDDEN_IN_PURE = ("ray", "mlflow")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (``from a import b`` gives a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_package_was_read():
    assert len(MODULES) > 40 and "raypose.tuning.study" in MODULES


@pytest.mark.parametrize("external", sorted(OWNERS))
def test_one_module_talks_to_each_service(external):
    importers = sorted(m for m, names in MODULES.items() if any(matches(n, external) for n in names))
    assert importers == [OWNERS[external]]


@pytest.mark.parametrize("pure", PURE)
def test_pure_modules_import_no_ray_or_mlflow(pure):
    modules = [m for m in MODULES if matches(m, pure)]
    assert modules, f"no module under {pure}"
    offenders = sorted((m, n) for m in modules for n in MODULES[m] if any(matches(n, f) for f in FORBIDDEN_IN_PURE))
    assert not offenders, f"{pure} imports Ray or MLflow: {offenders[:5]}"


def test_importing_the_pure_modules_loads_no_ray_or_mlflow():
    """What the pure modules import, and what those import in turn, loads neither Ray nor MLflow."""
    pure = sorted(m for m in MODULES if any(matches(m, p) for p in PURE))
    code = (f"import importlib, sys\nfor m in {pure!r}: importlib.import_module(m)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
