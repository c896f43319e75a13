"""The stream's batches as float images on the device, read ahead of the model.

Reading a batch (memory-mapped rows, decoded JPEGs, corruptions generated on first use) is the
harness's own cost, paid by every method. On CUDA a background thread reads the next
``prefetch`` batches while the GPU works on the current one; the uint8 images are pinned and
copied without blocking, and turned into floats on the device (a uint8 copy moves a quarter of
the bytes). On the CPU the default is to read in the calling thread: every core already computes
the model, so a reading thread only competes with it, and a batch converted just before the
forward is still in the cache (measured: 3-5 % faster than reading ahead, scripts/bench.py).
Prefetching changes when a batch is read, never which: batches come in the plan's order, so
results are identical with any ``prefetch``.

A failure while reading (a missing file, a bad index) is raised by the iterator at the batch it
concerns, after every earlier batch was served; closing the loader (also on an interrupt) stops
its thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ttabench.data.base import CorruptionDataset
from ttabench.streams import StreamPlan
from ttabench.streams.plan import Batch

_END = object()  # the reading thread's last item after the final batch


def fetch_images(dataset: CorruptionDataset, plan: StreamPlan, domain_ids, indices) -> torch.Tensor:
    """uint8 images of one batch in stream order (a mixed batch spans several domains)."""
    first = int(domain_ids[0])
    if domain_ids[-1] == first and (domain_ids == first).all():
        return dataset.images(plan.domains[first], indices)
    out = None
    for d in np.unique(domain_ids):
        rows = np.flatnonzero(domain_ids == d)
        part = dataset.images(plan.domains[int(d)], indices[rows])
        if out is None:
            out = part.new_empty((len(indices), *part.shape[1:]))
        out[torch.from_numpy(rows)] = part
    return out


class BatchLoader:
    """Iterate ``(batch, images)`` over a plan; images float in [0, 1] on ``device``.

    Args:
        dataset: Where the images come from (read by one thread only: no dataset needs to be
            thread-safe).
        plan: The stream; batches come in its order.
        device: Where the model runs.
        prefetch: Batches read ahead in a background thread (0: read when asked, no thread;
            None: 2 on CUDA, 0 on the CPU).
        channels_last: Hand out images in ``channels_last`` memory format (for a model
            converted to it).
    """

    def __init__(
        self,
        dataset: CorruptionDataset,
        plan: StreamPlan,
        device: torch.device | str = "cpu",
        prefetch: int | None = None,
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        if prefetch is None:
            prefetch = 2 if self.device.type == "cuda" else 0
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an integer >= 0 (batches read ahead): {prefetch!r}")
        self.dataset, self.plan, self.prefetch = dataset, plan, prefetch
        self.channels_last = channels_last
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(prefetch, 1))
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[tuple[Batch, torch.Tensor]]:
        self.close()  # a second pass starts afresh: no stop flag or batches left from the first
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=max(self.prefetch, 1))
        if self.prefetch == 0:
            for batch in self.plan.batches():
                yield batch, self._on_device(self._read(batch))
            return
        self._thread = threading.Thread(target=self._produce, name="ttabench-loader", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, images = item
                yield batch, self._on_device(images)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reading thread (idempotent); pending batches are dropped."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # make room, so a thread blocked on a full queue sees the stop
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread = None

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, batch: Batch) -> torch.Tensor:
        """The batch's images, ready for the device: floats on the CPU, pinned uint8 for CUDA."""
        images = fetch_images(self.dataset, self.plan, batch.domain_ids, batch.indices)
        if self.device.type == "cpu":
            return self._layout(images.float().div_(255))
        return images.pin_memory() if self.device.type == "cuda" else images

    def _on_device(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return images
        return self._layout(images.to(self.device, non_blocking=True).float().div_(255))

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _produce(self) -> None:
        try:
            for batch in self.plan.batches():
                if self._stop.is_set() or not self._put((batch, self._read(batch))):
                    return
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, raised there)
            self._put(exc)
            return
        self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
