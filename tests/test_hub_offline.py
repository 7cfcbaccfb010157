"""Hub ids with no network (``genrl.hub``): one request decides, then the cache only, at once.

No test reaches the internet: an unreachable hub is ``HF_ENDPOINT`` on a closed local port, a
reachable one a local HTTP server. Before ``genrl.hub``, each such load retried every file five
times ("Retrying in 8s", about 23 s a file) and diffusers warned "Couldn't connect to the Hub"
before genrl's one-line error."""

import functools
import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from huggingface_hub import constants

from genrl import hub
from genrl.families.base import load_pipeline
from genrl.policies.vlm import load_components
from genrl.vlm_batching import load_model_dir
from rewards.clip import CLIPScoreReward
from rewards.pickscore import PickScoreReward
from rewards.videoalign import load_videoalign

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


@pytest.fixture
def answering():
    """A local HTTP server whose ``HEAD /`` answers with the status given; yields its URL maker."""
    servers = []

    def serve(status: int) -> str:
        class Answer(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self.send_response(status if self.path == "/" else 404)
                self.send_header("X-Error-Code", "RepoNotFound")  # what the hub says of a repository it lacks
                self.end_headers()

            do_GET = do_HEAD  # noqa: N815  (http.server's naming)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()


def test_reachable_hub_leaves_online_mode(hub_at, answering):
    hub_at(answering(200))
    assert hub.local_only() is False
    assert not constants.is_offline_mode() and "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.parametrize("status", [404, 502, 503])  # a gateway, a proxy, an outage: not the hub
def test_an_error_status_is_not_the_hub(hub_at, answering, status):
    hub_at(answering(status))
    assert hub.local_only() is True and constants.is_offline_mode()


@pytest.mark.parametrize("value,offline", [("1", True), ("true", True), ("0", False), ("no", False)])
def test_hf_hub_offline_set_by_the_user_decides_without_a_request(hub_at, monkeypatch, value, offline):
    hub_at(f"http://127.0.0.1:{closed_port()}")  # the request, if made, would say offline
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.local_only() is offline


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


def videoalign_on_missing_base():
    """Loads a VideoReward folder (files present, contents never reached) whose base model is ``MISSING``."""
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "model_config.json"), "w") as f:
        json.dump({"model_config": {"model_name_or_path": MISSING}}, f)
    os.mkdir(os.path.join(folder, "checkpoint-1"))
    open(os.path.join(folder, "checkpoint-1", "model.pth"), "wb").close()
    try:
        load_videoalign(folder)
    finally:
        shutil.rmtree(folder)


LOADS = {  # a hub id that no cache holds, through each loader of hub ids, and the key the error names
    "pipeline": (functools.partial(load_pipeline, MISSING, None), "policy.model"),
    "vlm": (functools.partial(load_components, MISSING), "policy.model"),
    "sft": (functools.partial(load_model_dir, MISSING), "model"),  # the SFT trainer's key
    "pickscore": (functools.partial(PickScoreReward, processor=MISSING), "reward_args.pickscore.processor"),
    "videoalign": (videoalign_on_missing_base, "model_config.model_name_or_path"),  # its folder's key
}


@pytest.mark.parametrize("load,key", LOADS.values(), ids=LOADS)
def test_missing_hub_id_fails_at_once_without_retries(hub_at, caplog, capfd, load, key):
    hub_at(f"http://127.0.0.1:{closed_port()}")
    caplog.set_level(logging.INFO)
    with pytest.raises(ValueError) as e:
        load()
    assert f"{key}='{MISSING}': not in the local Hugging Face cache" in str(e.value)
    assert (
        f"`hf download {MISSING}`" in str(e.value) and "couldn't connect" not in str(e.value).lower()
    )  # not the library's advice
    said = caplog.text + capfd.readouterr().err  # diffusers' logger writes to stderr, not to the root logger
    assert "Retrying" not in said and "Couldn't connect" not in said


@pytest.mark.parametrize("load,key", LOADS.values(), ids=LOADS)
def test_a_model_the_hub_lacks_is_named_at_once(hub_at, answering, capfd, load, key):
    """Online, diffusers took the hub's "not found" for a lost connection (it warned "Couldn't connect" and
    fell back to the cache) and the error spoke of connections."""
    url = answering(200)
    hub_at(url)
    with pytest.raises(ValueError, match=rf"{key}='{MISSING}': no such model on {url}"):
        load()
    assert "Couldn't connect" not in capfd.readouterr().err and not constants.is_offline_mode()


@pytest.fixture
def stalling():
    """A local HTTP server that answers ``HEAD /`` (the probe) and then never answers (a stalled mirror);
    yields its URL."""
    release = threading.Event()

    class Stall(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            if self.path == "/":
                self.send_response(200)
                self.end_headers()
            else:
                release.wait(120)

        do_GET = do_HEAD  # noqa: N815  (http.server's naming)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()


@pytest.mark.parametrize("load,key", LOADS.values(), ids=LOADS)
def test_a_hub_that_stops_answering_is_left_for_the_cache(hub_at, stalling, monkeypatch, load, key):
    """The hub answered the probe, then no request: the requests that set no time limit (diffusers'
    ``model_info``, ``repo_exists``) waited for good (a run was stopped after 300 s)."""
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    hub_at(stalling)
    start = time.monotonic()
    with pytest.raises(ValueError, match=rf"{key}='{MISSING}': not in the local Hugging Face cache"):
        load()
    assert time.monotonic() - start < 60 and constants.is_offline_mode()


@pytest.mark.parametrize(
    "model,pretrained,says",
    [  # a tag whose weights are on the hub only; a hub model (its pretrained default unused)
        ("ViT-B-32", "datacomp_s_s13m_b4k", "reward_args.clip.pretrained='datacomp_s_s13m_b4k': not in the local"),
        (f"hf-hub:{MISSING}", "laion2b_s32b_b79k", f"reward_args.clip.model='hf-hub:{MISSING}': not in the local"),
    ],
)
def test_clip_from_the_hub_offline_fails_without_open_clips_log(hub_at, caplog, model, pretrained, says):
    hub_at(f"http://127.0.0.1:{closed_port()}")
    caplog.set_level(logging.INFO)
    with pytest.raises(ValueError) as e:
        CLIPScoreReward(model=model, pretrained=pretrained)
    assert says in str(e.value) and "laion2b" not in str(e.value), str(e.value)
    assert "hf download laion/CLIP-ViT-B-32-DataComp.S-s13M-b4K" in str(e.value) or MISSING in str(e.value)
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
    assert f"hf download {MISSING}" in lines[0]
    assert not run.exists()
