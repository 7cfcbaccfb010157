"""Hub ids with no network (``genrl.hub``): one request decides, then the cache only, at once.

No test reaches the internet: an unreachable hub is ``HF_ENDPOINT`` on a closed local port, a
reachable one a local HTTP server. Before ``genrl.hub``, each such load retried every file five
times ("Retrying in 8s", about 23 s a file) and diffusers warned "Couldn't connect to the Hub"
before genrl's one-line error."""

import functools
import http.server
import logging
import os
import socket
import subprocess
import sys
import threading

import pytest
from huggingface_hub import constants

from genrl import hub
from genrl.families.base import load_pipeline
from genrl.policies.vlm import load_components
from rewards.clip import CLIPScoreReward
from rewards.pickscore import PickScoreReward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "genrl-test/no-such-model"


def closed_port() -> int:
    """A local port nothing listens on (a connection to it is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_at(monkeypatch):
    """Point the hub libraries at ``url`` with offline mode off and the probe not yet made; both are
    put back afterwards (``local_only`` switches offline mode on for the whole process)."""

    def point(url: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.local_only.cache_clear()

    yield point
    hub.local_only.cache_clear()


def test_unreachable_hub_switches_to_offline_mode(hub_at):
    hub_at(f"http://127.0.0.1:{closed_port()}")
    assert hub.local_only() is True
    assert constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"


def test_reachable_hub_leaves_online_mode(hub_at):
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hub_at(f"http://127.0.0.1:{server.server_address[1]}")
        assert hub.local_only() is False
        assert not constants.is_offline_mode() and "HF_HUB_OFFLINE" not in os.environ
    finally:
        server.shutdown()


def test_offline_mode_set_by_the_user_is_kept_without_a_request(hub_at, monkeypatch):
    hub_at("http://genrl-test.invalid")  # would fail if asked; offline mode answers first
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.local_only() is True


def test_held_logs_are_dropped_on_error_and_kept_on_success(caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError):
        with hub.held_logs():
            logging.error("failed to download")  # on the root logger, as open_clip does
            raise RuntimeError("load failed")
    assert "failed to download" not in caplog.text
    with hub.held_logs():
        logging.warning("loaded from the cache")
    assert "loaded from the cache" in caplog.text


LOADS = {  # a hub id that no cache holds, through each loader of hub ids
    "pipeline": functools.partial(load_pipeline, MISSING, None),
    "vlm": functools.partial(load_components, MISSING),
    "pickscore": functools.partial(PickScoreReward, MISSING, MISSING),
}


@pytest.mark.parametrize("load", LOADS.values(), ids=LOADS)
def test_missing_hub_id_fails_at_once_without_retries(hub_at, caplog, capfd, load):
    hub_at(f"http://127.0.0.1:{closed_port()}")
    caplog.set_level(logging.INFO)
    with pytest.raises(ValueError, match=MISSING):
        load()
    said = caplog.text + capfd.readouterr().err  # diffusers' logger writes to stderr, not to the root logger
    assert "Retrying" not in said and "Couldn't connect" not in said


@pytest.mark.parametrize(
    "model,pretrained",
    [("ViT-B-32", "datacomp_s_s13m_b4k"), (f"hf-hub:{MISSING}", None)],  # a tag with hub weights only; a hub model
)
def test_clip_from_the_hub_offline_fails_without_open_clips_log(hub_at, caplog, model, pretrained):
    hub_at(f"http://127.0.0.1:{closed_port()}")
    caplog.set_level(logging.INFO)
    with pytest.raises(ValueError, match="must already be in the Hugging Face cache"):
        CLIPScoreReward(model=model, pretrained=pretrained)
    assert "Failed to download" not in caplog.text and "Retrying" not in caplog.text


def test_cli_hub_id_offline_is_one_line_exit_2_nothing_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf"))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "genrl.cli", "train", "configs/digits/flowgrpo.yaml", f"policy.model={MISSING}"]
    proc = subprocess.run([*cmd, f"output_dir={run}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genrl train: policy.model='{MISSING}'"), proc.stderr
    assert "huggingface-cli download" in lines[0]
    assert not run.exists()
