"""What a user sees in the MLflow UI for a finished study (not a test): run once by a maintainer.

Starts ``mlflow server`` on the study's store (an ``http://`` tracking URI is used as is), finds the
experiment, its parent run (no ``mlflow.parentRunId`` tag) and its child runs (the trials), and opens
in headless Chromium the experiment (with ``?workflowType=machine_learning`` and without), the
Compare page of the trials (Parallel Coordinates, Scatter and Contour tabs), the parent run and the
Models page. Writes a PNG and the DOM of each to ``--out``, and ``summary.json``; exits 1 when the
runs-table link shows no runs table.

MLflow 3.17.2, as its UI bundle (``mlflow/server/js/build``) reads and as checked with this script
on stores that logged other names in other orders (``log_param`` and ``log_batch``):

- ``#/experiments/ID`` opens the GenAI "Overview" (Traces 0, "No data available") until "Model
  training" is picked in the sidebar's GenAI | Model training switch, which that browser keeps
  (localStorage ``mlflow.workflowType_v1``); the tag ``mlflow.experimentKind=custom_model_development``
  changes nothing. ``?workflowType=machine_learning`` opens the runs table, where the trials are
  collapsed under the parent's row: only its name shows until its [+] is clicked.
- Compare, ``#/compare-runs?runs=["id",...]&experiments=["id"]`` (JSON, URL-escaped), renders only
  its first tab until another is clicked. Its defaults, in JavaScript ``sort()`` order (code units:
  digits, upper case, ``_``, lower case), whatever order the keys were logged in:

  * parallel coordinates: the first 3 params of those whose value differs between the runs (one
    equal in all, e.g. ``epochs``, is left out); one metric: the first-logged of the first run in
    ``runs=``, among those all runs have; not sorted: ``val_loss`` logged first beats ``oks_map``.
  * scatter: x = the first of all params (constant or not, text or number), y = the first metric
    (even one some runs lack).
  * contour: of the keys whose every value is a number, x, y = the first two params, z = the first
    metric. A constant x or y draws no plot ("The X axis doesn't have enough unique data points").

  A raypose quickstart study gives ``optim.effective_lr, optim.lr, optim.lr_scaling`` + ``oks_map``,
  scatter ``accumulate`` x ``body_ap``, contour ``accumulate`` x ``batch_size`` (both constant: no
  plot). To show the searched values against OKS by default, the trials' params must sort the
  searched ones first (or not log the fixed ones), and OKS must sort first among the metrics.

Usage::

    python benchmarks/check_mlflow_ui.py --tracking-uri sqlite:///mlflow.db --experiment NAME \\
        [--out benchmarks/out/mlflow_ui] [--artifacts-destination DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import html
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlparse

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1100"]
PARENT_TAG = "mlflow.parentRunId"
TABS = ["scatter-plot", "contour-plot"]  # rendered only once clicked
SERVER_WAIT_S = 300  # for mlflow server to answer: over 2 minutes on a busy 2-core machine
PAGE_WAIT_S = 300  # for a page's own content to appear: the first loads MLflow's 4 MB bundle
SETTLE_S = 3  # then for plotly and the tables to finish drawing
RUN_LINK = re.compile(r'href="#/experiments/\d+/runs/([0-9a-f]{32})"')
# in the DOM of MLflow 3.17's Compare page
AXIS_TITLE = re.compile(r'class="(?:axis-title|xtitle|ytitle)"[^>]*?data-unformatted="([^"]*)"')
SELECTOR = re.compile(r'id="([xyz])-?axis-selector"[^>]*?value="(param|metric)-([^"]*)"')
CHIP = re.compile(r'class="[\w-]*select-selection-item-content">([^<]+)<')
NO_PLOT = re.compile(r"The \w(?: and \w)? ax(?:is doesn't|es don't) have enough unique data points[^.]*\."
                     r"|Contour plots can only be rendered[^.]*\.|Nothing to compare!")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(uri: str, artifacts: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on ``uri`` on a free loopback port, once it answers ``/health``."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", uri, "--serve-artifacts", "--artifacts-destination", artifacts,
           "--workers", "1"]  # one browser: more workers only slow the start on a busy machine
    # no huey job runners (GenAI jobs: none of these pages needs one); its own process group, so
    # that the uvicorn workers it starts stop with it
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + SERVER_WAIT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            return proc, base
        except OSError:
            time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"mlflow server did not answer on {base} within {SERVER_WAIT_S} s: see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def study_runs(client, name: str):
    """(experiment, parent run, its child runs oldest first); the latest parent when there are several."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise SystemExit(f"no experiment {name!r}; the store has: {[e.name for e in client.search_experiments()]}")
    runs = client.search_runs([experiment.experiment_id], max_results=5000, order_by=["start_time ASC"])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    if not parents:
        raise SystemExit(f"experiment {name!r} has no parent run (a run without a {PARENT_TAG} tag)")
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[-1].info.run_id]
    return experiment, parents[-1], children


@contextlib.asynccontextmanager
async def chromium(out: Path):
    """A headless Chromium tab (a ``Tab``) driven through the DevTools protocol: to click the
    Compare tabs, and to capture a page once its own content is there (``chromium --screenshot
    --virtual-time-budget`` cannot click, and took minutes a page on a busy machine)."""
    import aiohttp  # installed with ray[default]

    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={profile}",
                                 f"--remote-debugging-port={port}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as http:
                pages = []
                for _ in range(120):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/json/list") as reply:
                            pages = [t for t in await reply.json() if t["type"] == "page"]
                        break
                    await asyncio.sleep(0.5)
                if not pages:
                    raise RuntimeError(f"chromium answered no DevTools call on port {port} within 60 s")
                async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    tab = Tab(ws, out)
                    # headless, the page would get the window's size less a frame: 1600 x 957
                    await tab.call("Emulation.setDeviceMetricsOverride", width=1600, height=1100,
                                   deviceScaleFactor=1, mobile=False)
                    yield tab
        finally:
            proc.terminate()
            proc.wait(timeout=30)


class Tab:
    def __init__(self, ws, out: Path):
        self.ws, self.out, self.ids = ws, out, itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while (reply := await self.ws.receive_json()).get("id") != msg_id:
            pass  # an event
        return reply.get("result", {})

    async def js(self, expression: str, wait_s: float = 0):
        """The value of ``expression``; with ``wait_s``, polled until truthy or ``wait_s`` passed."""
        deadline = time.monotonic() + wait_s
        while True:
            reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
            value = reply.get("result", {}).get("value")
            if value or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.5)

    async def capture(self, name: str, ready: str) -> tuple[str, bool]:
        """(DOM, whether ``ready`` came true) of the page; writes ``name.png`` and ``name.dom.html``."""
        ok = bool(await self.js(f"!!({ready})", wait_s=PAGE_WAIT_S))  # an element is returned as {}
        await asyncio.sleep(SETTLE_S)
        shot = await self.call("Page.captureScreenshot", format="png")
        (self.out / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
        dom = await self.js("document.documentElement.outerHTML")
        (self.out / f"{name}.dom.html").write_text(dom)  # to check the findings against
        return dom, ok

    async def open(self, url: str, name: str, ready: str) -> tuple[str, bool]:
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(1)  # after a change of the #fragment only, the old DOM stays a moment
        return await self.capture(name, ready)

    async def click_tab(self, tab: str, name: str) -> tuple[str, bool]:
        trigger = f"document.querySelector('[role=tab][id$=\"trigger-{tab}\"]')"
        mousedown = "new MouseEvent('mousedown', {bubbles: true, button: 0})"  # Radix tabs switch on it
        if not await self.js(f"(t => t && (t.dispatchEvent({mousedown}), true))({trigger})", wait_s=PAGE_WAIT_S):
            raise RuntimeError(f"no {tab} tab on the page")
        content = f"document.querySelector('[id$=\"content-{tab}\"]')"
        # a plot, or the note that stands in for one (a constant axis, too few keys)
        return await self.capture(name, f"{content}?.querySelector('.main-svg') || "
                                        f"/enough unique|can only be rendered|Nothing to compare/.test({content}?.innerText)")


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def plot_defaults(dom: str) -> dict:
    """A Compare tab's plot: what its selects hold (``x``, ``y``, ``z``: ``"param NAME"`` or
    ``"metric NAME"``; for the parallel coordinates the chips of its ``params`` and ``metrics``
    multi-selects), plotly's axis titles left to right, and the note shown instead of a plot."""
    found: dict = {axis: f"{kind} {html.unescape(key)}" for axis, kind, key in SELECTOR.findall(dom)}
    if not found and "Metrics:" in dom:
        params, _, metrics = dom.partition("Metrics:")
        found = {"params": [html.unescape(c) for c in CHIP.findall(params)],
                 "metrics": [html.unescape(c) for c in CHIP.findall(metrics)]}
    note = NO_PLOT.search(visible_text(dom))
    return {**found, "axis_titles": [html.unescape(t) for t in AXIS_TITLE.findall(dom)],
            "note": note and note.group(0)}


def experiment_findings(dom: str, parent, children) -> dict:
    shown, text = set(RUN_LINK.findall(dom)), visible_text(dom)
    matching = re.search(r"(\d+) matching runs", text)
    return {"runs_table": bool(shown & {parent.info.run_id, *(c.info.run_id for c in children)}),
            "parent_row": parent.info.run_id in shown,
            "child_rows_shown": sum(c.info.run_id in shown for c in children),
            "matching_runs": int(matching.group(1)) if matching else None,
            "genai_overview": "No data available" in text or "Token Usage" in text}


def page_urls(base: str, exp_id: str, parent, children) -> dict[str, tuple[str, str]]:
    """Page name -> (URL, JS that is true once the page's own content has rendered)."""
    runs = json.dumps([c.info.run_id for c in children], separators=(",", ":"))
    run_row, text = "document.querySelector('.ag-row a[href*=\"/runs/\"]')", "document.body.innerText"
    return {
        "experiment_runs": (f"{base}/#/experiments/{exp_id}?workflowType=machine_learning", run_row),
        "experiment_plain": (f"{base}/#/experiments/{exp_id}", f"{run_row} || /No data available/.test({text})"),
        "parent_run": (f"{base}/#/experiments/{exp_id}/runs/{parent.info.run_id}",
                       f"{text}.includes('{parent.info.run_id}')"),
        "models": (f"{base}/#/models", f"/Create model|No models/i.test({text}) && !{text}.includes('Loading')"),
        # last: the tabs are clicked on it
        "compare": (f"{base}/#/compare-runs?runs={quote(runs)}&experiments={quote(json.dumps([exp_id]))}",
                    "document.querySelector('[id$=\"content-parallel-coordinates-plot\"] .main-svg')"),
    }


async def visit(pages: dict[str, tuple[str, str]], out: Path) -> dict[str, tuple[str, bool]]:
    """(DOM, ready) of each page, then of each Compare tab after a click on it."""
    async with chromium(out) as browser:
        doms = {name: await browser.open(url, name, ready) for name, (url, ready) in pages.items()}
        for tab in TABS:
            doms[f"compare_{tab}"] = await browser.click_tab(tab, f"compare_{tab}")
    return doms


def check(base: str, client, experiment, parent, children, out: Path) -> dict:
    pages = page_urls(base, experiment.experiment_id, parent, children)
    doms = asyncio.run(visit(pages, out))
    text = {name: visible_text(dom) for name, (dom, _) in doms.items()}
    models = [m.name for m in client.search_registered_models()]
    findings = {
        "experiment_runs": experiment_findings(doms["experiment_runs"][0], parent, children),
        "experiment_plain": experiment_findings(doms["experiment_plain"][0], parent, children),
        "parent_run": {"run_name_shown": (parent.info.run_name or "") in text["parent_run"],
                       "child_runs_listed": sum((c.info.run_name or "") in text["parent_run"] for c in children),
                       "params_shown": [k for k in parent.data.params if k in text["parent_run"]]},
        "models": {"registered": models, "shown": [m for m in models if m in text["models"]]},
        "compare": {plot: plot_defaults(doms[name][0]) for plot, name in
                    [("parallel_coordinates", "compare"), ("scatter", "compare_scatter-plot"),
                     ("contour", "compare_contour-plot")]},
    }
    shots = {name: [name] for name in pages} | {"compare": ["compare", *(f"compare_{t}" for t in TABS)]}
    return {"experiment": {"id": experiment.experiment_id, "name": experiment.name},
            "parent_run": parent.info.run_id, "child_runs": len(children),
            "pages": {name: {"url": url, "screenshots": [f"{s}.png" for s in shots[name]],
                             "rendered": all(doms[s][1] for s in shots[name]), "findings": findings[name]}
                      for name, (url, _) in pages.items()}}


def artifact_root(experiment, given: str | None) -> str:
    """``given``, else the folder holding the experiment's artifact folder (the store's root)."""
    location = urlparse(experiment.artifact_location)
    if given or location.scheme not in ("", "file"):
        return given or experiment.artifact_location
    return str(Path(location.path).parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True,
                        help="the study's store (sqlite:///mlflow.db) or a running server (http://...)")
    parser.add_argument("--experiment", required=True, help="MLflow experiment name of the study")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/mlflow_ui",
                        help="folder for the screenshots, the DOMs and summary.json")
    parser.add_argument("--artifacts-destination", default=None,
                        help="the server's --artifacts-destination (default: the store's artifact root)")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    args.out.mkdir(parents=True, exist_ok=True)
    client, server = MlflowClient(args.tracking_uri), None
    experiment, parent, children = study_runs(client, args.experiment)
    try:
        if args.tracking_uri.startswith(("http://", "https://")):
            base = args.tracking_uri.rstrip("/")
        else:
            server, base = start_server(args.tracking_uri, artifact_root(experiment, args.artifacts_destination),
                                        args.out / "server.log")
        summary = check(base, client, experiment, parent, children, args.out)
    finally:
        if server is not None:
            stop_server(server)
    partial = args.out / "summary.json.partial"
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    partial.replace(args.out / "summary.json")
    for page, info in summary["pages"].items():
        print(f"{page}: {info['url']}\n  {json.dumps(info['findings'])}")
    runs_page = summary["pages"]["experiment_runs"]
    ok = runs_page["findings"]["runs_table"]
    late = "" if runs_page["rendered"] else f" (no run row within {PAGE_WAIT_S} s)"
    print(f"runs table at the workflowType=machine_learning link: {'yes' if ok else 'NO'}{late}; see {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
