"""Tiny real diffusers pipelines, one module per model family (``dummy_<family>.py``).

Each module defines ``FAMILY`` (its name in ``genrl.families``), ``build()`` -> the pipeline
built from tiny configs in code (random weights, seeded, no download), ``PROMPTS`` and
``POLICY_KW`` (extra ``PolicyConfig`` fields such as ``height``) and
``pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale)``: the stock pipeline's own
output for those seeds, in genrl's layout (images ``[B, C, H, W]``, videos ``[B, F, C, H, W]``, in ``[0, 1]``).
A module may set ``GUIDANCE_SCALES`` (default ``(1.0, 2.5)``) to the CFG scales its pipeline supports. ``tests/test_families.py``
runs the same acceptance checks over every module found here."""
