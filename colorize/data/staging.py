"""Host batches to a CUDA device without the host waiting: each batch is copied into one of a
ring of pinned buffers and from there to the device on a copy stream of its own, which the
compute stream waits for on the device. A buffer is refilled only once its copy to the device,
``slots`` batches before, has finished, so the host never overwrites a batch still being copied."""
from typing import List, Optional, Sequence, Tuple

import torch


class _Slot:
    def __init__(self):
        self.buffers: Optional[List[torch.Tensor]] = None
        self.copied: Optional[torch.cuda.Event] = None  # when the device copy out of them is done


class PinnedStaging:
    """Copies batches of host tensors to ``device`` (a CUDA device) through ``slots`` pinned buffers."""

    def __init__(self, device: torch.device, slots: int = 3):
        self.device = device
        self.slots = [_Slot() for _ in range(slots)]
        self.next = 0
        self.stream = torch.cuda.Stream(device)

    def _buffers(self, slot: _Slot, tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if slot.copied is not None:
            slot.copied.synchronize()  # the copy from ``slots`` batches ago, long done unless the host runs ahead
        if slot.buffers is None or [b.shape for b in slot.buffers] != [t.shape for t in tensors]:
            slot.buffers = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        return slot.buffers

    def __call__(self, tensors: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """``tensors`` (host memory that may change once this returns) on the device, usable on
        the current stream."""
        slot = self.slots[self.next]
        self.next = (self.next + 1) % len(self.slots)
        buffers = self._buffers(slot, tensors)
        for buffer, tensor in zip(buffers, tensors):
            buffer.copy_(tensor)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            on_device = tuple(buffer.to(self.device, non_blocking=True) for buffer in buffers)
        slot.copied = torch.cuda.Event()
        slot.copied.record(self.stream)
        compute.wait_event(slot.copied)
        for tensor in on_device:
            tensor.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        return on_device
