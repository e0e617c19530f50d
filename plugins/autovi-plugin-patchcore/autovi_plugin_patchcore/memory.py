"""Refuse, before allocating it, a memory bank that cannot fit in the memory this process may use.

The full bank (every training patch, before the coreset) and its random projection exist together
while the coreset is selected. When they cannot fit, the fit fails with a one-line
:class:`~autovi_core.errors.ConfigError` naming the bank's size and the options that shrink it, not
with the kernel's OOM kill (or, under ``--memory-limit``, a failed allocation deep inside torch).
"""

from __future__ import annotations

from autovi_core.errors import ConfigError

WORKING_BYTES_PER_PATCH = 128
"""The coreset's own arrays per bank patch, an upper bound for both algorithms (``pruned``: float64
minimum distances and norms, a 3 N int64 index pool, the chosen centres at coreset_ratio <= 0.1)."""


def available_memory() -> tuple[int, str]:
    """Bytes this process can still allocate, and where the bound comes from.

    The smaller of the system's available memory (psutil) and, when an address-space limit
    (RLIMIT_AS, e.g. ``autovi run --memory-limit``) is set, that limit minus the address space in use.
    """
    import psutil

    available, source = int(psutil.virtual_memory().available), "available system memory"
    try:
        import resource
    except ImportError:  # not on POSIX
        return available, source
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
        left = max(0, int(soft) - int(psutil.Process().memory_info().vms))
        if left < available:
            available, source = left, f"memory left under the address-space limit (RLIMIT_AS {_size(int(soft))}, e.g. --memory-limit)"
    return available, source


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TB"  # pragma: no cover


def bank_bytes(n_patches: int, dims: int, projection_dim: int) -> int:
    """Bytes the coreset selection holds at once: the float32 bank, its float32 projection (none
    when the features are not wider than ``projection_dim``) and the selection's working arrays."""
    projected = min(dims, projection_dim) if dims > projection_dim else 0
    return n_patches * (4 * dims + 4 * projected + WORKING_BYTES_PER_PATCH)


def check_bank_fits(name: str, n_images: int, patches_per_image: int, dims: int, projection_dim: int) -> None:
    """Raise :class:`ConfigError` when the bank of ``n_images`` x ``patches_per_image`` patches of
    ``dims`` float32 values (plus its projection and the selection's arrays) exceeds the memory left."""
    n_patches = n_images * patches_per_image
    need = bank_bytes(n_patches, dims, projection_dim)
    available, source = available_memory()
    if need <= available:
        return
    bank = n_patches * dims * 4
    raise ConfigError(
        f"detector {name!r}: the memory bank of {n_images} training images x {patches_per_image} patches = "
        f"{n_patches:,} patches x {dims} dims x 4 bytes = {_size(bank)} ({_size(need)} with the coreset's projection "
        f"and working arrays) does not fit in the {_size(available)} of {source}; reduce it with a smaller "
        f"resize/crop (patches per image), a smaller target_dim (dims) or fewer training images "
        f"(coreset_ratio only shrinks the bank kept after the selection)"
    )
