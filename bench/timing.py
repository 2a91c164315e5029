"""The one timing loop of every benchmark, and the statistics each reports from its samples.

`measure` is the shape all of them share: a warm-up (compiles kernels, fills caches; not timed), then n samples,
each timed from before its runs to after the sync that waits for the device to finish them. Work that belongs to a
run but not to its time (restoring a state, reading the allocator's peak) goes in `before` and `after`, which run
around the warm-up and every sample alike, outside the timed region.

The statistic depends on the use:
- `bench ops` (per-op us/run): R rounds interleaved over every op and ceiling (`interleaved`), one timed batch each
  per round (`runs_per_batch` sizes it), and the median of the R batches (`median`): rounds spread over the whole
  run are closer to independent samples than back-to-back batches, which a comparison test needs;
- `bench pp/tg` (llama-bench) and `bench delta-net`: every repetition's figure with their mean and sample standard
  deviation, `mean_std`.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def measure(run: Callable[[], None], sync: Callable[[], None], n: int, per_sample: int = 1, warmup: bool = True,
            before: Callable[[], None] | None = None, after: Callable[[], None] | None = None) -> list[float]:
    """Seconds per run of each of `n` samples. With `warmup`, one untimed run (and its sync) first. A sample is
    `per_sample` runs followed by one `sync`, timed together and divided by `per_sample`."""

    def sample(runs: int) -> float:
        if before is not None:
            before()
        t0 = time.perf_counter()
        for _ in range(runs):
            run()
        sync()
        seconds = time.perf_counter() - t0
        if after is not None:
            after()
        return seconds / runs

    if warmup:
        sample(1)
    return [sample(per_sample) for _ in range(n)]


def runs_per_batch(run: Callable[[], None], sync: Callable[[], None], seconds: float, max_runs: int = 1000) -> int:
    """How many runs make a timed batch of about `seconds` (at least 1, at most max_runs), from one warm-up run
    (compiles, fills caches) and one timed run."""
    once = max(measure(run, sync, 1)[0], 1e-6)
    return int(min(max_runs, max(1, seconds / once)))


def interleaved(samplers: dict, rounds: int, progress: str = "") -> dict:
    """key -> `rounds` samples of each sampler (a callable returning one sample), taken in rounds: round r calls
    every sampler once, in order, before round r + 1 starts, so each one's samples are spread over the whole run and a
    disturbance hits one sample of many keys rather than every sample of one. A tqdm bar on stderr when it is a
    terminal, labelled `progress`."""
    from tqdm import tqdm

    samples = {key: [] for key in samplers}
    with tqdm(total=rounds * len(samplers), desc=progress, unit="batch", disable=None, leave=False) as bar:
        for _ in range(rounds):
            for key, sample in samplers.items():
                samples[key].append(sample())
                bar.update()
    return samples


def median(samples: list[float]) -> float:
    """The median sample: robust to the occasional disturbed round on either side. `bench ops`."""
    return float(np.median(samples))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value), llama-bench's `avg ± stddev`. `bench
    pp/tg` (of t/s per repetition) and `bench delta-net` (of seconds per repetition)."""
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
