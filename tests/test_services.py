"""An MLflow tracking server or a Ray cluster that does not answer is refused within seconds,
before any work, with one message naming the address and the fix."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest
import yaml

import raypose.data.prepare
from raypose.cli.main import main
from raypose.errors import ConfigError
from raypose.experiment_log import check_tracking_server
from raypose.training.ray_train import _host_port, check_ray_address


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_work(monkeypatch):
    """Preparing the data means the checks came too late: fail loudly if it happens."""

    def prepared(*args, **kwargs):
        raise AssertionError("the data was prepared before the services were checked")

    monkeypatch.setattr(raypose.data.prepare, "ensure_data", prepared)


@pytest.fixture
def http_server():
    """A tiny HTTP server on loopback: /health answers 200 OK, anything else 404. Yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------------------- MLflow


def test_a_live_tracking_server_passes(http_server):
    check_tracking_server(http_server)
    check_tracking_server(http_server + "/")
    check_tracking_server(http_server + "/behind-a-proxy")  # /health answers 404 there: still reachable
    # TLS to a plain-HTTP port fails in the handshake: something answers, and MLflow judges certificates
    check_tracking_server(http_server.replace("http://", "https://"))


@pytest.mark.parametrize(
    "uri", ["sqlite:////nonexistent/mlflow.db", "file:///nonexistent/mlruns", "databricks"]
)
def test_local_stores_are_not_probed(uri):
    check_tracking_server(uri)


def test_a_closed_port_is_refused_at_once():
    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(ConfigError, match="does not answer") as e:
        check_tracking_server(uri)
    assert time.monotonic() - start < 5
    assert uri in str(e.value) and "mlflow server" in str(e.value) and "MLFLOW_TRACKING_URI" in str(e.value)


def test_a_server_that_never_answers_is_refused_after_the_timeout():
    with socket.socket() as listening:  # accepts the connection (backlog), never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        uri = f"http://127.0.0.1:{listening.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ConfigError, match="waited up to 0.5 s"):
            check_tracking_server(uri, timeout_s=0.5)
        assert time.monotonic() - start < 3


def _config_file(tmp_path, tiny_train_config, **changes) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**tiny_train_config, **changes}))
    return str(path)


def _tune_space(tmp_path, tiny_train_config, **base) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": {**tiny_train_config, **base},
                "search": {"optim.lr": {"loguniform": [1.0e-3, 2.0e-3]}},
                "tune": {"num_samples": 2, "storage_path": str(tmp_path / "runs")},
            }
        )
    )
    return str(path)


def _refused_fast(argv, capsys, *named) -> str:
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert err.startswith(f"raypose {argv[0]}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in named:
        assert text in err, err
    return err


@pytest.mark.parametrize("command", ["train", "tune"])
def test_an_unreachable_tracking_server_is_refused_before_any_work(
    command, tmp_path, tiny_train_config, monkeypatch, capsys, no_work
):
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    mlflow = {"enabled": True, "experiment": "unreachable"}
    if command == "train":
        argv = ["train", _config_file(tmp_path, tiny_train_config, mlflow=mlflow), "--local"]
    else:
        argv = ["tune", _tune_space(tmp_path, tiny_train_config, mlflow=mlflow)]
    _refused_fast(argv, capsys, uri, "mlflow server", "unset MLFLOW_TRACKING_URI")
    assert not (tmp_path / "runs").exists()


def test_predict_from_an_unreachable_registry_is_refused(synth_data, tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port()}"
    argv = [
        "predict",
        "models:/pose/1",
        str(synth_data.val_images),
        "--ann",
        str(synth_data.val_ann),
        "--out",
        str(tmp_path / "dets.json"),
        "--device",
        "cpu",
        "--tracking-uri",
        uri,
    ]
    _refused_fast(argv, capsys, uri)
    assert not (tmp_path / "dets.json").exists()


# ----------------------------------------------------------------------------- Ray


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("head.example:6380", ("head.example", 6380)),
        ("[::1]:6379", ("::1", 6379)),
        ("ray://head:10002", ("head", 10002)),
        ("ray://head", ("head", 10001)),
    ],
)
def test_ray_addresses_are_parsed(address, expected):
    assert _host_port(address, address) == expected


@pytest.mark.parametrize("address", ["head", "head:port", ":6379", "http://head"])
def test_malformed_ray_addresses_are_refused(address):
    with pytest.raises(ConfigError, match=rf"RAY_ADDRESS={address}: not a Ray address; use HOST:PORT"):
        _host_port(address, address)


def test_a_dead_ray_address_is_refused_at_once(monkeypatch):
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"RAY_ADDRESS={address}: no Ray cluster answers") as e:
        check_ray_address()
    assert time.monotonic() - start < 5
    assert "unset RAY_ADDRESS" in str(e.value) and "ray start --head" in str(e.value)


@pytest.mark.parametrize("address", ["", "local"])
def test_no_ray_address_is_not_probed(address, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", address)
    check_ray_address()


def test_a_live_ray_port_passes(monkeypatch):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{listening.getsockname()[1]}")
        check_ray_address()


def test_auto_without_a_cluster_is_refused(monkeypatch):
    import ray._private.services

    def no_cluster(address, temp_dir=None):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray._private.services, "canonicalize_bootstrap_address", no_cluster)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(ConfigError, match="RAY_ADDRESS=auto: no Ray cluster was started on this machine"):
        check_ray_address()


@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_dead_ray_address_is_refused_before_any_work(
    command, tmp_path, tiny_train_config, monkeypatch, capsys, no_work
):
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    if command == "train":
        argv = ["train", _config_file(tmp_path, tiny_train_config, workers=1)]
    else:
        argv = ["tune", _tune_space(tmp_path, tiny_train_config)]
    _refused_fast(argv, capsys, f"RAY_ADDRESS={address}", "unset RAY_ADDRESS")
    assert not (tmp_path / "runs").exists()
