"""Greedy k-centre coreset subsampling of the patch-feature memory bank (PatchCore, Sec. 3.2).

The coreset keeps the points that best cover the bank: repeatedly add the point farthest from the
points chosen so far. As in the paper, distances are measured after a random bias-free linear
projection to a few dimensions (Johnson-Lindenstrauss) and the minimum distances are initialised
with the mean distance to a few random start points. Memory is O(N) on top of the projected bank:
one distance vector, updated in place against each newly chosen point; no N x N matrix is formed.

Two implementations of the same farthest-point rule (``algorithm``, the detector's ``coreset_algorithm``):

- ``exact``: the loop above in torch, float32 distances by |a|^2 + |b|^2 - 2ab; every step reads the
  whole projected bank (N x 128 x 4 bytes), so it is bound by memory bandwidth;
- ``pruned`` (:mod:`.pruned_greedy`): the same rule, but distances the triangle inequality proves
  cannot lower a minimum are never computed (about 4 % of the point distances are computed on a
  400-image bank), and those that are, are summed in float64. It can break a float32 near-tie of
  ``exact`` the other way, after which both go on choosing farthest points along different paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from autovi_core.training import single_thread_on_cpu

CORESET_ALGORITHMS = ("exact", "pruned")


def random_projection(features: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Project (N, D) features to ``dim`` dimensions with a Gaussian random matrix (identity if D <= dim)."""
    if features.shape[1] <= dim:
        return features
    matrix = torch.randn(features.shape[1], dim, generator=generator, dtype=features.dtype) / dim**0.5
    return features @ matrix.to(features.device)


def _squared_distances_to(points: torch.Tensor, norms: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances from all ``points`` (N, d) to one ``centre`` (d,), via |a|^2 + |b|^2 - 2ab."""
    return (norms + centre.dot(centre) - 2.0 * (points @ centre)).clamp_(min=0.0)


def greedy_k_center(
    points: torch.Tensor,
    n_select: int,
    initial_distances: torch.Tensor,
    steps: Callable[[range], Iterable[int]] = iter,
) -> torch.Tensor:
    """Indices of ``n_select`` points chosen by farthest-point (greedy k-centre) selection.

    ``initial_distances`` (N,) are the points' starting distances to the (virtual) current set;
    each step picks the point with the largest distance and lowers every distance to its distance
    to the new point. ``steps`` wraps the step range (e.g. in a progress bar). Returns int64 indices in
    selection order.
    """
    norms = (points * points).sum(dim=1)
    min_sq = initial_distances.to(points.dtype).square().clone()
    chosen = torch.empty(n_select, dtype=torch.long)
    with single_thread_on_cpu(points.device):
        for step in steps(range(n_select)):
            index = int(torch.argmax(min_sq))
            chosen[step] = index
            torch.minimum(min_sq, _squared_distances_to(points, norms, points[index]), out=min_sq)
    return chosen


def mean_distance_to_start_points(points: torch.Tensor, n_start: int, generator: torch.Generator, chunk: int = 65536) -> torch.Tensor:
    """(N,) mean L2 distance of every point to ``n_start`` random points, computed in chunks."""
    starts = torch.randperm(points.shape[0], generator=generator)[: max(1, n_start)].to(points.device)
    anchors = points[starts]
    out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
    for begin in range(0, points.shape[0], chunk):
        out[begin : begin + chunk] = torch.cdist(points[begin : begin + chunk], anchors).mean(dim=1)
    return out


def coreset_indices(
    features: torch.Tensor,
    ratio: float,
    *,
    projection_dim: int = 128,
    start_points: int = 10,
    seed: int = 0,
    steps: Callable[[range], Iterable[int]] = iter,
    algorithm: str = "exact",
) -> torch.Tensor:
    """Indices (sorted) of the approximate greedy coreset holding ``ratio`` of the (N, D) ``features``.

    ``ratio >= 1`` keeps every point. Deterministic for a given ``seed``. ``algorithm``: ``exact`` or
    ``pruned`` (see the module docstring; ``pruned`` runs on the CPU whatever the features' device).
    """
    if algorithm not in CORESET_ALGORITHMS:
        raise ValueError(f"unknown coreset algorithm {algorithm!r}; valid: {', '.join(CORESET_ALGORITHMS)}")
    n = features.shape[0]
    n_select = max(1, min(n, round(n * ratio)))
    if n_select >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(int(seed))
    projected = random_projection(features.float(), projection_dim, generator)
    initial = mean_distance_to_start_points(projected, start_points, generator)
    if algorithm == "pruned":
        chosen = _pruned_with_progress(projected.cpu().numpy(), n_select, initial.cpu().numpy(), steps)
    else:
        chosen = greedy_k_center(projected, n_select, initial, steps)
    return torch.sort(chosen).values


def _pruned_with_progress(points, n_select: int, initial, steps: Callable[[range], Iterable[int]]) -> torch.Tensor:  # noqa: ANN001
    """Run :func:`.pruned_greedy.pruned_greedy_k_center` (compiled, GIL released) in a thread and
    advance ``steps`` (e.g. a progress bar) as its step counter moves."""
    import threading
    import time

    import numpy as np

    from .pruned_greedy import pruned_greedy_k_center

    progress = np.zeros(1, np.int64)
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["chosen"] = pruned_greedy_k_center(points, n_select, initial, progress)[0]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    if steps is iter:
        work()
    else:
        thread = threading.Thread(target=work, name="patchcore-coreset", daemon=True)
        thread.start()
        for step in steps(range(n_select)):
            while progress[0] <= step and thread.is_alive():
                time.sleep(0.05)
        thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return torch.from_numpy(result["chosen"])  # type: ignore[arg-type]
