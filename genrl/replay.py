"""SePPO's random checkpoint replay (RCR): the pool of earlier weights the reference is drawn from.

SePPO (Zhang et al., arXiv 2410.05255; v2 calls it "Random Checkpoint Replay") does not keep the
reference model fixed: the checkpoints saved so far in the run, the starting model included, form
a pool, and the reference is drawn uniformly from it (``ref ~ U(0, k - 1)`` in v1's algorithm as
its reviewers quote it; the v1 ablation compares it with the fixed starting model, as
Diffusion-DPO and DITTO use, and with the latest checkpoint, as SPIN-Diffusion does). A pool entry
is a copy of the trained parameters (``Policy.trainable_state_dict``: the LoRA adapters, or the
whole denoiser under full fine-tuning), held in CPU memory or, for full fine-tunes whose
snapshots would fill the memory (SD1.5's UNet: 3.4 GB each in fp32), written to
``<folder>/step-NNNNNN.safetensors`` (atomically, by the main process) and read back when drawn;
the reference runs the policy's own module with those tensors (``genrl.ema.WithWeights``).

The pool is part of the trainer's checkpoint (``state_dict``: tensors, ints and file names only,
loadable with ``torch.load(weights_only=True)``), and draws use a generator seeded per step by the
trainer, so a resumed run draws the same references. On disk, a snapshot that leaves a bounded pool
(``max_size``) keeps its file while a kept checkpoint still refers to it: :meth:`prune_files`, called
after each checkpoint with the oldest kept one's step, removes the files no kept checkpoint can name.
A snapshot taken after start-up always writes its file, replacing one a killed run left at that step,
and :meth:`flush` removes the files of steps past the pool's newest (what a killed run wrote after its
last checkpoint), so a resumed run never draws an abandoned run's weights.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

from genrl.ema import WithWeights
from genrl.io import atomic_path, file_crc32

REFERENCE_MODES = ("replay", "fixed", "latest")


class CheckpointPool:
    """Snapshots of the trained parameters taken at optimizer steps; entry 0 is the start.

    ``mode``: ``replay`` draws uniformly from every entry (SePPO's RCR), ``fixed`` always takes the
    start (Diffusion-DPO), ``latest`` the newest entry (SPIN-Diffusion). ``max_size > 0`` keeps the
    start and the newest ``max_size - 1`` snapshots (memory bound for large full fine-tunes); 0 keeps
    all. ``folder``: keep snapshots as safetensors files there instead of in memory (``writer``:
    whether this process writes them; the others only record their names). Raises ``ValueError``
    for an unknown mode or a negative size."""

    def __init__(
        self,
        named_params: dict[str, torch.nn.Parameter],
        mode: str = "replay",
        max_size: int = 0,
        folder: Optional[str] = None,
        writer: bool = True,
    ):
        if mode not in REFERENCE_MODES:
            raise ValueError(f"reference mode {mode!r}; valid: {', '.join(REFERENCE_MODES)}")
        if max_size < 0:
            raise ValueError(f"pool size must be >= 0, got {max_size}")
        self.params, self.mode, self.max_size = dict(named_params), mode, int(max_size)
        self.folder, self.writer = folder, writer
        self.steps: list[int] = []
        self.weights: list[Union[dict[str, torch.Tensor], str]] = []  # tensors, or a file name in folder
        self._loaded: tuple[Optional[str], dict] = (None, {})  # the last file read (redraws reuse it)
        self._pending: Optional[dict[str, dict]] = {}  # on disk: snapshots not written before flush()
        self.retired: list[tuple[int, str]] = []  # on disk: (step it left the pool at, file) not yet removed
        self.crc32: dict[str, int] = {}  # on disk: each file's CRC-32 as written (checkpointed, checked on reads)
        self._verified: set[str] = set()  # files whose CRC-32 this process has checked
        self.add(0)

    @property
    def grows(self) -> bool:
        """Whether a snapshot after the start can ever be drawn: not with mode ``fixed``, whose pool holds
        the start only (a snapshot every ``snapshot_every`` steps would cost memory, disk and checkpoint
        size for nothing)."""
        return self.mode != "fixed"

    @torch.no_grad()
    def add(self, step: int, current: int = 0) -> int:
        """Snapshot the current parameters (CPU copies) as taken after optimizer step ``step``. Returns
        where the entry at index ``current`` (the reference in use) now is: it moves down by one when
        the oldest snapshot after the start is dropped (``max_size``), and is -1 if it was dropped."""
        self.steps.append(int(step))
        tensors = {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}
        if self.folder is None:
            self.weights.append(tensors)
        else:
            name = f"step-{int(step):06d}.safetensors"
            self.weights.append(name)
            if self._pending is not None:  # before flush(): kept until start-up has succeeded
                self._pending[name] = tensors
            else:
                self._write(name, tensors, replace=True)  # a killed run's file of this step is stale
        if self.max_size and len(self.steps) > self.max_size:  # keep the start
            if self.folder is not None:  # earlier checkpoints may still name the file: prune_files decides
                self.retired.append((int(step), self.weights[1]))
            del self.steps[1], self.weights[1]
            return -1 if current == 1 else current - (current > 1)
        return current

    def _write(self, name: str, tensors: dict[str, torch.Tensor], replace: bool = False) -> None:
        """Write one snapshot file (the writer only); an existing file is kept unless ``replace`` (at
        start-up it holds the same weights: the start's, or a resumed pool's own)."""
        path = os.path.join(self.folder, name)
        if self.writer and (replace or not os.path.isfile(path)):
            from safetensors.torch import save_file

            os.makedirs(self.folder, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp))
            self.crc32[name] = file_crc32(path)
            self._verified.add(name)

    def flush(self) -> None:
        """On disk: write the snapshots taken so far (the start) and every later one as it is taken, and
        remove the files of steps after the pool's newest snapshot (a killed run's, past the checkpoint
        this run resumed from; no checkpoint names them). The trainer calls it once start-up has
        succeeded, so a failed start writes and removes nothing."""
        for name, tensors in (self._pending or {}).items():
            self._write(name, tensors)
        self._pending = None
        if self.folder is not None and self.writer and os.path.isdir(self.folder):
            for name in os.listdir(self.folder):
                if (step := _snapshot_step(name)) is not None and step > self.steps[-1]:
                    os.remove(os.path.join(self.folder, name))

    def prune_files(self, oldest_checkpoint_step: Optional[int]) -> list[str]:
        """On disk: remove the files of snapshots that left the pool at or before
        ``oldest_checkpoint_step``, the oldest checkpoint kept (None: every checkpoint is kept, remove
        nothing): a checkpoint taken at step ``c`` names only the snapshots in the pool then, and one
        retired at step ``r <= c`` was not. Returns the names removed (the writer process's)."""
        if self.folder is None or oldest_checkpoint_step is None:
            return []
        gone = [name for r, name in self.retired if r <= oldest_checkpoint_step]
        self.retired = [(r, name) for r, name in self.retired if r > oldest_checkpoint_step]
        for name in gone if self.writer else []:
            if os.path.isfile(path := os.path.join(self.folder, name)):
                os.remove(path)
        return gone

    def draw(self, generator: Optional[torch.Generator] = None) -> int:
        """The index of the next reference: uniform over the pool (``replay``), 0 or the newest."""
        if self.mode == "fixed":
            return 0
        if self.mode == "latest":
            return len(self.steps) - 1
        return int(torch.randint(0, len(self.steps), (1,), generator=generator))

    def reference(self, index: int, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` computing with entry ``index``'s weights (moved to the parameters' device)."""
        device = next(iter(self.params.values())).device
        return WithWeights(module, {n: w.to(device) for n, w in self._tensors(index).items()})

    def _tensors(self, index: int) -> dict[str, torch.Tensor]:
        entry = self.weights[index]
        if isinstance(entry, dict):
            return entry
        if self._pending and entry in self._pending:
            return self._pending[entry]
        if self._loaded[0] != entry:
            from safetensors.torch import load_file

            path = os.path.join(self.folder, entry)
            if not os.path.isfile(path):
                raise ValueError(f"reference snapshot {path} is missing (the pool's files stay with the run)")
            self._check_crc(entry)
            self._loaded = (entry, load_file(path))
        return self._loaded[1]

    def _check_crc(self, name: str) -> None:
        """``ValueError`` naming snapshot file ``name`` when its bytes differ from the CRC-32 recorded as it
        was written (a flipped bit trained on another reference, silently; a damaged header was a traceback);
        once per file and process. A file written by another process, or before checksums, is not checked."""
        if name in self._verified or name not in self.crc32:
            return
        path = os.path.join(self.folder, name)
        if file_crc32(path) != self.crc32[name]:
            raise ValueError(
                f"reference snapshot {path} is damaged: its CRC-32 differs from the one recorded when it was "
                "written; start over (resume=false), or put back the file the run wrote"
            )
        self._verified.add(name)

    def __len__(self) -> int:
        return len(self.steps)

    def state_dict(self) -> dict:
        """``mode``, ``steps``, and ``weights`` (tensors) or ``files`` (names in the folder) with ``retired``
        (``[step, name]`` of snapshots that left the pool, whose files :meth:`prune_files` has not removed)."""
        if self.folder is not None:
            retired = [[r, name] for r, name in self.retired]
            return {
                "mode": self.mode,
                "steps": list(self.steps),
                "weights": [],
                "files": list(self.weights),
                "retired": retired,
                "crc32": {n: self.crc32[n] for n in self.weights if n in self.crc32},
            }
        return {"mode": self.mode, "steps": list(self.steps), "weights": [dict(w) for w in self.weights]}

    def load_state_dict(self, state: dict) -> None:
        if state["mode"] != self.mode:
            raise ValueError(
                f"the checkpoint's pool was drawn with reference.mode={state['mode']!r}, not {self.mode!r}: resume "
                f"with reference.mode={state['mode']}, or start over (resume=false)"
            )
        files = state.get("files")
        if (files is not None) != (self.folder is not None):
            where = "on disk" if files is not None else "in memory"
            raise ValueError(f"the checkpoint's pool was kept {where}: set reference.storage accordingly")
        if state["weights"] and set(state["weights"][0]) != set(self.params):
            raise ValueError("the checkpoint's pool holds other parameters than this policy trains")
        if files is not None:  # found now, not at the random later step that draws it
            start = self._pending or {}  # the start's snapshot, not yet written: flush() writes it
            missing = [n for n in files if n not in start and not os.path.isfile(os.path.join(self.folder, n))]
            if missing:
                raise ValueError(
                    f"the pool's snapshot file{'s' if len(missing) > 1 else ''} {', '.join(missing[:3])}"
                    f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''} missing from {self.folder} (the "
                    "checkpoint's pool draws from them): put them back, or start over (resume=false)"
                )
        self.crc32 = {str(n): int(c) for n, c in (state.get("crc32") or {}).items()}  # none before checksums
        self._verified = set()
        for name in files or ():  # a damaged file is found now, not at the random later step that draws it
            if name not in (self._pending or {}):
                self._check_crc(name)
        self.steps = [int(s) for s in state["steps"]]
        self.weights = list(files) if files is not None else [dict(w) for w in state["weights"]]
        self.retired = [
            (int(r), str(name)) for r, name in state.get("retired", [])
        ]  # older checkpoints: none recorded


def _snapshot_step(name: str) -> Optional[int]:
    """The step of a pool file name ``step-NNNNNN.safetensors``; None for any other name."""
    stem, ext = os.path.splitext(name)
    if ext != ".safetensors" or not stem.startswith("step-") or not stem[5:].isdigit():
        return None
    return int(stem[5:])


__all__ = ["REFERENCE_MODES", "CheckpointPool"]
