"""Farthest-point (greedy k-centre) selection that skips, by the triangle inequality, the distances
that cannot lower any point's minimum (the ``coreset_algorithm`` choice ``pruned``).

The greedy's rule is unchanged: each step adds the point whose distance to the chosen set is the
largest. What changes is which distances are computed. Every point p keeps its squared distance
m_p to the chosen point nearest to it (its *centre* a); the points sharing a centre form a cluster
with squared radius R_a^2 = max m_p. When a new point c is chosen, p can only move to c if ||p - c|| < ||p - a||,
and since ||p - c|| >= ||a - c|| - ||p - a||, that is impossible whenever ||a - c|| >= 2 ||p - a||:

- a whole cluster is skipped when ||a - c||^2 >= 4 R_a^2 (one centre-to-centre distance; the bound
  ||a - c|| >= | ||a|| - ||c|| | from two stored norms is tried first, but decides only about 5 % of
  them on Lite0 banks);
- inside a cluster that is not skipped, a point is skipped when ||a - c||^2 >= 4 m_p;
- before any distance, the bound ||p - c|| >= | ||p|| - ||c|| | (stored norms) is tried.

Skipping uses a relative safety margin far above float64 rounding, so a skipped distance is one the
full greedy would also have found not to lower the minimum. Distances are summed in float64 directly
as sum (x_i - y_i)^2 (no |x|^2 + |y|^2 - 2xy cancellation; vectorised, so the summation order follows
the CPU's vector width, like BLAS's in ``exact``); the ``exact`` loop computes them in float32
by that expansion, so the two can break a near-tie differently and then continue on different (equally
greedy) paths. Ties are broken towards the smallest index, as ``torch.argmax`` does.

Each cluster's members are kept as one contiguous run in a pool of indices; the points that move to
a new centre are appended at the end of the pool and the pool is compacted when it fills. The
points still holding only their initial (virtual) distance form one extra cluster that is never
skipped. Memory: the pool (3 N int64) plus O(N) and O(n_select x d) arrays, next to the bank.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_MARGIN = 1.0 + 1e-9  # a skip needs ||a - c||^2 >= 4 m (1 + 1e-9): far above float64 rounding
_NORM_SLACK = 1e-12  # relative slack on the bound | ||a|| - ||c|| | (norms carry rounding too)


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _squared_distance(x: np.ndarray, i: int, y: np.ndarray, k: int) -> float:
    """sum (x[i] - y[k])^2 over the row, in float64 (the whole row: an early exit per block of
    dimensions stops LLVM from vectorising the loop and measured 3-5x slower here)."""
    acc = 0.0
    for j in range(x.shape[1]):
        diff = np.float64(x[i, j]) - np.float64(y[k, j])
        acc += diff * diff
    return acc


@nb.njit(cache=True, nogil=True)
def _compact(pool: np.ndarray, start: np.ndarray, count: np.ndarray, n_clusters: int) -> int:
    """Copy every live cluster run to the front of the pool, in order; return the new end."""
    packed = np.empty_like(pool)
    end = 0
    for a in range(n_clusters):
        s, k = start[a], count[a]
        packed[end : end + k] = pool[s : s + k]
        start[a] = end
        end += k
    pool[:end] = packed[:end]
    return end


@nb.njit(cache=True, nogil=True, fastmath=True)
def _select(points: np.ndarray, min_sq: np.ndarray, n_select: int, progress: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The greedy selection (indices in order) and work counters; ``min_sq`` (float64) is updated in place.

    ``progress[0]`` is set to the number of steps done (read by a watcher thread for the progress bar).
    """
    n, d = points.shape
    virtual = n_select  # cluster id of the points that only hold their initial distance
    n_slots = n_select + 1
    start = np.zeros(n_slots, np.int64)
    count = np.zeros(n_slots, np.int64)
    radius = np.full(n_slots, -1.0)  # max min_sq of the members; -1 when empty
    far = np.zeros(n_slots, np.int64)  # the member holding it (smallest index on ties)
    cnorm = np.zeros(n_slots)
    centres = np.empty((n_select, d), points.dtype)
    norms = np.empty(n)
    for p in range(n):
        acc = 0.0
        for j in range(d):
            v = np.float64(points[p, j])
            acc += v * v
        norms[p] = np.sqrt(acc)
    capacity = 3 * n
    pool = np.empty(capacity, np.int64)
    for p in range(n):
        pool[p] = p
        if min_sq[p] > radius[virtual]:
            radius[virtual] = min_sq[p]
            far[virtual] = p
    count[virtual] = n
    end = n
    chosen = np.empty(n_select, np.int64)
    # point distances computed, centre distances computed, clusters scanned, members visited, virtual-cluster distances
    counters = np.zeros(5, np.int64)
    for step in range(n_select):
        # the farthest point: the largest cluster radius, ties to the smallest index
        best, index = -1.0, 0
        for a in range(step):
            if count[a] == 0:
                continue
            if radius[a] > best or (radius[a] == best and far[a] < index):
                best, index = radius[a], far[a]
        a = virtual
        if radius[a] > best or (radius[a] == best and count[a] > 0 and far[a] < index):
            best, index = radius[a], far[a]
        chosen[step] = index
        centres[step] = points[index]
        cn = norms[index]
        cnorm[step] = cn
        if capacity - end < n:
            end = _compact(pool, start, count, n_slots)
        new_start = end
        new_radius, new_far = -1.0, 0
        for slot in range(step + 1):
            a = virtual if slot == step else slot
            k = count[a]
            if k == 0:
                continue
            if a == virtual:
                gap = -1.0  # no centre: nothing can be skipped
            else:
                limit = 4.0 * radius[a] * _MARGIN
                bound = abs(cnorm[a] - cn) - _NORM_SLACK * (cnorm[a] + cn)
                if bound > 0.0 and bound * bound >= limit:
                    continue
                counters[1] += 1
                gap = _squared_distance(centres, a, centres, step)
                if gap >= limit:
                    continue
            counters[2] += 1
            s = start[a]
            kept = 0
            kept_radius, kept_far = -1.0, 0
            counters[3] += k
            for i in range(s, s + k):
                p = pool[i]
                m = min_sq[p]
                moved = False
                if gap < 4.0 * m * _MARGIN:
                    bound = abs(norms[p] - cn) - _NORM_SLACK * (norms[p] + cn)
                    if not (bound > 0.0 and bound * bound >= m * _MARGIN):
                        counters[0] += 1
                        if a == virtual:
                            counters[4] += 1
                        d2 = _squared_distance(points, p, centres, step)
                        if d2 < m:
                            min_sq[p] = d2
                            m = d2
                            moved = True
                if moved:
                    pool[end] = p
                    end += 1
                    if m > new_radius or (m == new_radius and p < new_far):
                        new_radius, new_far = m, p
                else:
                    pool[s + kept] = p
                    kept += 1
                    if m > kept_radius or (m == kept_radius and p < kept_far):
                        kept_radius, kept_far = m, p
            count[a] = kept
            radius[a] = kept_radius
            far[a] = kept_far
        start[step] = new_start
        count[step] = end - new_start
        radius[step] = new_radius
        far[step] = new_far
        progress[0] = step + 1
    return chosen, counters


def pruned_greedy_k_center(
    points: np.ndarray, n_select: int, initial_distances: np.ndarray, progress: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Indices (selection order) of ``n_select`` of the (N, d) float32 ``points`` by farthest-point
    selection from the (N,) ``initial_distances``, the final squared minimum distances (float64), and
    work counters (point and centre distances computed, clusters scanned).

    ``progress`` (one int64) receives the number of steps done while the selection runs (it releases
    the GIL, so another thread can show it).
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    min_sq = np.square(np.asarray(initial_distances, dtype=np.float64))
    progress = np.zeros(1, np.int64) if progress is None else progress
    chosen, counters = _select(points, min_sq, int(n_select), progress)
    names = ("point_distances", "centre_distances", "clusters_scanned", "members_visited", "virtual_distances")
    work = {name: int(v) for name, v in zip(names, counters)}
    return chosen, min_sq, work
