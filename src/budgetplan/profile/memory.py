"""Memory measurement that works on CPU: saved-for-backward tensors and live storages.

Bytes are counted per storage (views share one), so a saved slice of a large tensor costs the whole storage,
which is what the allocator really keeps.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


def storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the unique storages behind `tensors`."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.numel() > 0:
            seen[storage_key(tensor)] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


class SavedTensors:
    """Records, by storage, every tensor autograd saves for backward while active.

    Parameters are excluded (they are weights, not activations). `label` attributes each save to the part
    that was running: set it from module hooks.
    """

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        self.param_keys = {storage_key(p) for p in params}
        self.label = ""
        self.saved: dict[int, tuple[int, str]] = {}  # storage key -> (bytes, label of first saver)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.numel() > 0:
            key = storage_key(tensor)
            if key not in self.param_keys and key not in self.saved:
                self.saved[key] = (tensor.untyped_storage().nbytes(), self.label)
        return tensor

    def bytes_for(self, label: str | None = None) -> int:
        return sum(n for n, who in self.saved.values() if label is None or who == label)

    def __enter__(self) -> SavedTensors:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


class LiveTracker(TorchDispatchMode):
    """Live storage bytes and their peak, seen through the dispatcher (allocations) and finalizers (frees).

    PyTorch has no CPU peak-memory call; this tracks every storage an op returns until it is freed.
    Storages that exist before tracking starts are added with `track`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def track(self, tensors: Iterable[torch.Tensor]) -> None:
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._add(tensor.untyped_storage())

    def reset_peak(self) -> int:
        """Start a new phase: the peak restarts from the current live bytes, which are returned."""
        self.peak_bytes = self.live_bytes
        return self.live_bytes

    def _add(self, storage: torch.UntypedStorage) -> None:
        nbytes = storage.nbytes()
        if nbytes == 0 or storage in self._seen or storage.device.type == "meta":
            return
        self._seen[storage] = nbytes
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._free, nbytes)

    def _free(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._add(tensor.untyped_storage())
        return out
