"""Hub ids on a machine without network: loaded from the local cache at once, or refused at once.

When the Hugging Face hub cannot be reached, huggingface_hub retries each file's request five times
with back-off (about 23 s a file), logging every retry, and diffusers warns "Couldn't connect to the
Hub" before it falls back to the cache. Measured on the reference machine (no network): a hub-id VLM
policy retried for about 25 s and printed 10 lines before genrl's one-line error, and the PickScore
reward (two hub ids, several files each) took over 2 minutes.

:func:`local_only` asks once per process whether the hub answers: one ``HEAD`` request to
``HF_ENDPOINT`` through huggingface_hub's own HTTP session (so the proxies and certificates the user
configured apply) with a 5 s timeout. When it gets no answer, or an answer that is not the hub's (an
error status: a gateway's 404, a proxy's 502, an outage's 503; huggingface.co answers 200), it
switches the hub libraries to offline mode, ``HF_HUB_OFFLINE=1`` (huggingface_hub's documented
switch, read at each request by huggingface_hub and so by transformers, diffusers and open_clip's
hub downloads; set in the environment too, for child processes). A model in the cache then loads at
once and a missing one fails at once, with genrl's one-line error naming the key. Loaders call it before loading a hub id
(never for local folders or ``task:`` models). An ``HF_HUB_OFFLINE`` the user set decides without a
request: ``1`` the cache only, ``0`` the hub as the libraries reach it (a mirror whose root answers
with an error status, say).

A hub that answers the probe and then stops answering (a stalled mirror) hung loads for good:
huggingface_hub's session sets no time limit, and the metadata requests diffusers makes first pass
none. Online, each request with no limit gets ``HF_HUB_ETAG_TIMEOUT`` seconds per wait
(huggingface_hub's setting for such requests, 10 by default), and :func:`check_exists` switches to
the cache when its request times out, so such a load ends as the offline one does.

Why ours: the libraries offer the offline switch and the timeout setting, not the check of whether to
use them.

:func:`held_logs` keeps a library's log lines about a load that then fails from standing before
genrl's one-line error (open_clip logs "Failed to download weights" on the root logger, then raises).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import NamedTuple

PROBE_TIMEOUT_S = 5.0


@functools.cache
def local_only() -> bool:
    """True when hub ids must come from the local cache: offline mode was set by the user, or the hub
    did not answer one request with a success status (then offline mode is switched on for this
    process and its children). False when the user set ``HF_HUB_OFFLINE`` to a false value."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    said = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()  # huggingface_hub's true values: 1 ON YES TRUE
    if constants.is_offline_mode() or said in ("1", "ON", "YES", "TRUE"):
        return True
    if said:  # set, and not true: the user says the hub is there
        _bound_waits()
        return False
    try:
        if get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S).status_code < 400:
            _bound_waits()
            return False
    except Exception:  # no name, no route, refused, timed out, TLS: the HTTP client's own error types,
        pass  # which change with huggingface_hub's version (httpx, httpx2), so no narrower class
    _go_offline()
    return True


def _go_offline() -> None:
    """Switches the hub libraries to the local cache for this process and its children."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    local_only.cache_clear()  # its next answer: True (the environment says so)


def _bound_request(request) -> None:
    """httpx request hook: a request with no time limit at all gets ``HF_HUB_ETAG_TIMEOUT`` seconds on each
    wait (``_bound_waits``)."""
    from huggingface_hub import constants

    parts = ("connect", "read", "write", "pool")
    if all(request.extensions.get("timeout", {}).get(part) is None for part in parts):
        request.extensions["timeout"] = dict.fromkeys(parts, float(constants.HF_HUB_ETAG_TIMEOUT))


def _bound_waits() -> None:
    """Bounds each wait of huggingface_hub's shared HTTP session on the hub by ``HF_HUB_ETAG_TIMEOUT``
    seconds (its own setting for metadata requests, 10 by default) where the request set no limit:
    ``HfApi.model_info``, which diffusers calls before loading a pipeline, and ``repo_exists`` pass
    ``timeout=None``, so a hub (or mirror) that answered the probe and then stopped answering hung the
    load for good (one run was stopped after 300 s). The limit goes in through an httpx request hook,
    which may rewrite a request's ``timeout`` extension before it is sent; a limit that a request or the
    user's own session sets is kept."""
    from huggingface_hub.utils import get_session

    hooks = get_session().event_hooks
    if _bound_request not in hooks["request"]:
        hooks["request"] = [*hooks["request"], _bound_request]


def is_path(name: str) -> bool:
    """``name`` means a file-system path, not a hub id (``org/name``): it exists, starts with ``/``,
    ``.`` or ``~``, or has more than one ``/``."""
    return os.path.exists(name) or name.startswith(("/", ".", "~")) or name.count("/") > 1


class HubRef(NamedTuple):
    """A hub repository that a config option loads from: the option's ``value`` as the user wrote it (an
    open_clip tag, a hub id), its ``repo_id``, and ``then``, how to use a downloaded copy instead (for
    :func:`load_failure`; empty: point the option at the folder)."""

    value: str
    repo_id: str
    then: str = ""


def check_exists(key: str, repo_id: str, value: str = "") -> None:
    """Online, a hub id the hub does not have is a ``ValueError`` naming ``key`` (``=value``, default the
    id) before any loading (one request, ``HfApi.repo_exists``): diffusers took the hub's "not found" for
    a lost connection, warned so and fell back to the cache, and the libraries' error then spoke of
    connections. Offline, or when the hub gives no clear answer, nothing is checked here (the load's own
    error follows)."""
    if local_only():
        return
    from huggingface_hub import HfApi, constants

    try:
        exists = HfApi(endpoint=constants.ENDPOINT).repo_exists(repo_id)  # the endpoint local_only asked
    except Exception as e:  # a malformed id, a server error: left to the loader, whose error says which
        if isinstance(e, _timeout_error()):  # the hub answered the probe, then stopped answering
            _go_offline()  # the cache only: what the probe does when nothing answers
        return
    if not exists:
        where = f"{constants.ENDPOINT}" if not value or value == repo_id else f"{constants.ENDPOINT} ({repo_id})"
        raise ValueError(f"{key}={value or repo_id!r}: no such model on {where} (a private one needs `hf auth login`)")


def check_available(key: str, ref: HubRef) -> None:
    """A hub repository that cannot load here is a ``ValueError`` naming ``key`` and the value written,
    found without loading: online, one the hub lacks (``check_exists``); offline, one of which the local
    cache holds no snapshot (``snapshot_download(local_files_only=True)``, which reads the cache only).
    For a command that loads several models one after another (``genrl compare``'s arms): the last one's
    refusal came after the others had trained."""
    check_exists(key, ref.repo_id, ref.value)
    if not local_only():
        return
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(ref.repo_id, local_files_only=True)
    except LocalEntryNotFoundError as e:
        raise ValueError(load_failure(key, ref.value, e, ref.repo_id, ref.then)) from None


def _timeout_error() -> type:
    """The timeout exception of the HTTP client huggingface_hub uses (``httpx``, or ``httpx2`` in newer
    versions: the package of its session's class, so no version is named here)."""
    import sys

    from huggingface_hub.utils import get_session

    return sys.modules[type(get_session()).__module__.partition(".")[0]].TimeoutException


def load_failure(key: str, value: str, error: Exception, repo_id: str = "", then: str = "") -> str:
    """One line for a hub model that could not be loaded: ``key=value`` the config setting naming it,
    ``repo_id`` its hub repository (default: ``value``), ``then`` how to use a downloaded copy (default:
    point ``key`` at the folder). Offline, the libraries' own text (about connections and retries)
    would mislead: the line says what to do instead."""
    from huggingface_hub import constants

    repo_id = repo_id or value
    if local_only():
        return (
            f"{key}={value!r}: not in the local Hugging Face cache, and hub downloads are off (HF_HUB_OFFLINE=1: "
            f"the hub did not answer, or you set it): download it on a connected machine (`hf download {repo_id}`), "
            f"then {then or f'point {key} at the folder'}, or set HF_HOME to a cache that holds it"
        )
    cause = " ".join(f"{type(error).__name__}: {error}".split())
    return f"{key}={value!r}: could not load {repo_id} from {constants.ENDPOINT} or the local cache ({cause})"


@contextlib.contextmanager
def held_logs(name: str = ""):
    """Holds the records logged on the logger ``name`` (``""``: the root logger) inside the block: dropped
    when the block raises (the error that follows says what failed), logged after it when it does not."""
    held: list[logging.LogRecord] = []

    class Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            held.append(record)
            return False

    logger, hold = logging.getLogger(name), Hold()
    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)
    for record in held:  # reached only when the block did not raise
        logger.handle(record)
