"""The training step: forward, loss, backward and, at the end of an accumulation group, the
optimizer step, the schedule and the weight average.

``train.cuda_graphs`` chooses how it runs. Eager, the step is Python calling kernels one by
one. Captured (:class:`CapturedStep`), the whole step, weight average included, is recorded
once in a CUDA graph and replayed for every batch: one launch instead of hundreds, so the GPU
never waits for the host. Capture needs one CUDA process with static shapes and no host
synchronisation inside the step; :func:`resolve_cuda_graphs` says whether a run meets that,
and why not.
"""
import contextlib
import functools
from dataclasses import dataclass, fields
from typing import Dict, Optional, Tuple

import torch

CUDA_GRAPH_WARMUP = 3  # eager steps on a side stream before capture (lazy initialisation, autotuning)


@dataclass(frozen=True)
class StepMode:
    """Whether the training step is captured in a CUDA graph, and why (or why not)."""

    captured: bool
    reason: str


def resolve_cuda_graphs(requested: str, device: torch.device, processes: int, precision: str,
                        grad_accum: int, compiled: bool) -> StepMode:
    """``train.cuda_graphs`` for a run: ``off``; ``auto`` captures wherever capture is possible and
    gives the reason where it is not; ``on`` does the same (a failed capture falls back to eager
    with its reason too)."""
    if requested == "off":
        return StepMode(False, "train.cuda_graphs=off")
    reasons = [(device.type != "cuda", "no CUDA device"),
               (processes > 1, f"{processes} processes (capture is for one process)"),
               (precision == "fp16", "fp16's gradient scaler synchronises with the host"),
               (grad_accum > 1, "train.grad_accum > 1"),
               (compiled, "train.compile compiles the model instead")]
    for applies, reason in reasons:
        if applies:
            return StepMode(False, reason)
    return StepMode(True, f"train.cuda_graphs={requested}: one CUDA process")


def eager_step(training, batch, group_size: int, steps: bool) -> Dict[str, torch.Tensor]:
    """One batch of an accumulation group of ``group_size``, the optimizer stepping after it when
    ``steps``; the batch's loss parts."""
    model, accelerator = training.model, training.accelerator
    with contextlib.nullcontext() if steps else accelerator.no_sync(model):
        losses = training.loss(model(batch.l), batch)
        accelerator.backward(losses["total"] / group_size)
    if steps:
        optimizer_step(training)
    return losses


def _update_parameters(training) -> None:
    """The optimizer step and the weight average after it, all on the device."""
    training.optimizer.optimizer.step()
    if training.average is not None:
        training.average.update(training.plain_model)


def optimizer_step(training) -> None:
    """Step the optimizer (through Accelerate: fp16 skips steps that overflow), the schedule and
    the weight average, then clear the gradients."""
    training.optimizer.step()
    if not getattr(training.optimizer, "step_was_skipped", False):
        training.schedule.step()
        if training.average is not None:
            training.average.update(training.plain_model)
    training.optimizer.optimizer.zero_grad(set_to_none=True)  # the wrapped one: Accelerate's reads a signature
    training.state.step += 1


def learning_rate_now(optimizer: torch.optim.Optimizer) -> float:
    """The first parameter group's learning rate, as a number (captured steps keep it in a tensor)."""
    return float(optimizer.param_groups[0]["lr"])


def plain_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Learning rates as numbers again (after loading a checkpoint of a captured run), as every
    optimizer accepts them."""
    for group in optimizer.param_groups:
        group["lr"] = float(group["lr"])
        if "capturable" in group:
            group["capturable"] = False


def _capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Let ``optimizer`` be captured: its learning rates in device tensors that the schedule
    fills in place (a number would be frozen into the graph), its step counts on the device."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        if "capturable" in group:
            group["capturable"] = True


class CapturedStep:
    """The training step captured in a CUDA graph after :data:`CUDA_GRAPH_WARMUP` eager steps,
    then replayed on each batch copied into the graph's input buffers. If capture fails, says
    why in one line and steps eagerly from then on."""

    def __init__(self, training):
        self.training = training
        self.eager_steps = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.inputs = None  # the batch buffers the graph reads
        self.losses: Dict[str, torch.Tensor] = {}  # the loss parts the graph writes

    def __call__(self, batch, group_size: int, steps: bool) -> Dict[str, torch.Tensor]:
        if not self.training.step_mode.captured:  # the capture failed
            return eager_step(self.training, batch, group_size, steps)
        if self.graph is None and self.eager_steps < CUDA_GRAPH_WARMUP:
            self.eager_steps += 1
            return self._side_stream(lambda: eager_step(self.training, batch, group_size, steps))
        if self.graph is None and not self._capture(batch):
            return eager_step(self.training, batch, group_size, steps)
        for buffer, value in zip(_tensors(self.inputs), _tensors(batch)):
            buffer.copy_(value, non_blocking=True)
        self.graph.replay()
        self.training.schedule.step()
        self.training.state.step += 1
        return self.losses

    @staticmethod
    def _side_stream(work):
        """Run ``work`` on a side stream, as CUDA graphs' warm-up must."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            result = work()
        torch.cuda.current_stream().wait_stream(side)
        return result

    def _capture(self, batch) -> bool:
        """Record the step on ``batch``'s buffers; False (said once) if it cannot be captured."""
        training = self.training
        optimizer = training.optimizer.optimizer
        _capturable(optimizer, training.accelerator.device)
        self.inputs = type(batch)(*(torch.empty_like(tensor) for tensor in _tensors(batch)))
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            # thread_local: the loader's threads (FFCV's) go on calling CUDA during the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"), _host_waits_raise():
                losses = training.loss(training.model(self.inputs.l), self.inputs)
                training.accelerator.backward(losses["total"])
                _update_parameters(training)
        except Exception as error:  # whatever stops the capture; a real fault recurs in the eager step
            torch.cuda.set_stream(stream)  # a failed capture can leave its own stream current
            cause = _first_cause(error)
            training.step_mode = StepMode(False, f"the step cannot be captured: {cause}")
            training.accelerator.print(f"the training step cannot be captured in a CUDA graph ({cause}); "
                                       "training on eagerly")
            plain_learning_rates(optimizer)
            optimizer.zero_grad(set_to_none=True)
            return False
        self.graph, self.losses = graph, losses
        return True


def step_runner(training):
    """The step ``training.step_mode`` asks for."""
    if training.step_mode.captured:
        return CapturedStep(training)
    return functools.partial(eager_step, training)


@contextlib.contextmanager
def _host_waits_raise():
    """Within: an operation that would make the host wait for the GPU (``.item()``, a boolean
    mask) raises before it reaches CUDA, so a step that waits fails its capture without
    invalidating it, which some torch releases do not recover from."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _first_cause(error: BaseException) -> str:
    """The first line of the error that started ``error``'s chain (a capture that fails inside
    ``torch.cuda.graph`` can end in a generic error about the capture)."""
    while True:
        cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if cause is None:
            break
        error = cause
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _tensors(batch) -> Tuple[torch.Tensor, ...]:
    return tuple(getattr(batch, field.name) for field in fields(batch))
