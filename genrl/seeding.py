"""Deterministic seeds derived from integers, so every process and a resumed run draw the
same random numbers for the same (seed, step, rank, ...) without storing generator state."""


def derive_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (seed, step, rank, ...)."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return h
