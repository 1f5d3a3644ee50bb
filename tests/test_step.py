"""How the training step runs (``train.cuda_graphs``): where it can be captured in a CUDA graph,
and runs that resume from a captured one. The captured step itself is tested in test_cuda.py."""
import pytest
import torch

from colorize.engine.step import plain_learning_rates, resolve_cuda_graphs

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("requested, device, processes, precision, grad_accum, compiled, reason", [
    ("auto", CPU, 1, "bf16", 1, False, "no CUDA device"),
    ("on", CUDA, 2, "bf16", 1, False, "2 processes"),
    ("auto", CUDA, 1, "fp16", 1, False, "fp16's gradient scaler"),
    ("auto", CUDA, 1, "bf16", 4, False, "train.grad_accum > 1"),
    ("auto", CUDA, 1, "no", 1, True, "train.compile"),
    ("off", CUDA, 1, "bf16", 1, False, "train.cuda_graphs=off"),
])
def test_the_step_is_eager_where_capture_is_not_possible(requested, device, processes, precision, grad_accum,
                                                         compiled, reason):
    mode = resolve_cuda_graphs(requested, device, processes, precision, grad_accum, compiled)
    assert not mode.captured and reason in mode.reason


@pytest.mark.parametrize("requested", ["auto", "on"])
def test_one_cuda_process_captures_its_step(requested):
    assert resolve_cuda_graphs(requested, CUDA, 1, "bf16", 1, False).captured


def test_learning_rates_saved_in_tensors_step_any_optimizer_again():
    """A captured run keeps its learning rates in tensors and its optimizer capturable: resumed on a
    CPU, the foreach Adam, which accepts neither, steps."""
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], lr=0.1, foreach=True)
    optimizer.param_groups[0].update(lr=torch.tensor(0.1), capturable=True)
    parameter.grad = torch.ones(3)
    with pytest.raises((RuntimeError, AssertionError)):
        optimizer.step()
    plain_learning_rates(optimizer)
    optimizer.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1) and parameter[0] < 1
