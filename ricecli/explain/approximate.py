"""Approximate occlusion (opt-in, NOT exact): Krypton-style adaptive drill-down.

Fewer positions run: a coarse grid first, then only the neighbourhood of its strongest values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ricecli.explain.positions import Job

Progress = Callable[[int, int], None]  # (done, total)


def drill_down(jobs: Sequence[Job], starts: Sequence[np.ndarray], fraction: float,
               run: Callable[[list[Job]], Iterable[np.ndarray]],
               progress: Progress | None = None) -> tuple[list[float], int]:
    """Approximate sensitivities of `jobs` (group, cube slices): coarse grid, then refine.

    Coarse: positions whose grid index is even on every axis (exact values). Refined: every
    position within one grid step of the strongest `fraction` of the coarse ones (per channel
    group, by |sensitivity|; exact values). Others: their coarse neighbour's value (grid index
    rounded down to even); positions whose coarse neighbour did not run are run too.
    `run` gives the sensitivities of a list of jobs, batch by batch.
    Returns (values, positions run).
    """
    index = np.asarray([[int(np.searchsorted(a, s.start)) for a, s in zip(starts, sl,
                                                                           strict=False)]
                        for _, sl in jobs], np.int64).reshape(-1, 3)
    group = np.asarray([g for g, _ in jobs], np.int64)
    coarse = np.flatnonzero((index % 2 == 0).all(axis=1))
    values = np.zeros(len(jobs), np.float64)
    done = 0

    def fill_in(which: np.ndarray) -> None:
        nonlocal done
        at = 0
        for sens in run([jobs[i] for i in which]):
            values[which[at:at + len(sens)]] = sens
            at += len(sens)
            done += len(sens)
            if progress is not None:
                progress(done, len(jobs))

    fill_in(coarse)
    chosen = []
    for g in np.unique(group):
        mine = coarse[group[coarse] == g]
        keep = int(np.ceil(fraction * len(mine)))
        chosen += list(mine[np.argsort(-np.abs(values[mine]), kind="stable")[:keep]])
    hot = {(int(group[i]), *index[i]) for i in chosen}
    steps = [np.asarray(d) - 1 for d in np.ndindex(3, 3, 3)]
    is_coarse = set(coarse.tolist())
    ran_coarse = {(int(group[i]), *index[i]) for i in coarse}
    near = [i for i in range(len(jobs)) if i not in is_coarse
            and (any((int(group[i]), *(index[i] + d)) in hot for d in steps)
                 or (int(group[i]), *(index[i] // 2 * 2)) not in ran_coarse)]
    fill_in(np.asarray(near, np.int64))
    ran = is_coarse | set(near)
    by_key = {(int(group[i]), *index[i]): values[i] for i in coarse}
    for i in range(len(jobs)):
        if i not in ran:
            values[i] = by_key.get((int(group[i]), *(index[i] // 2 * 2)), 0.0)
    return values.tolist(), len(ran)
