"""Precision chosen from the hardware, and the process set-up's refusals."""
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from colorize.engine.runtime import resolve_precision, sync_batchnorm
from colorize.errors import ConfigError
from colorize.models import create_model

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def run_in_a_new_process(code: str, env: dict) -> subprocess.CompletedProcess:
    """Python ``code`` in a process started with ``env`` (and no kernel limit of this one's)."""
    environment = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY} | env
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=environment,
                          capture_output=True, text=True, check=True)


def resolve_in_a_new_process(requested: str, env: dict) -> subprocess.CompletedProcess:
    """``resolve_precision(requested)`` on the CPU, in a process started with ``env``."""
    return run_in_a_new_process("from colorize.engine.runtime import resolve_precision\n"
                                f"p = resolve_precision({requested!r}, cuda=False)\nprint(p.name)\nprint(p.reason)",
                                env)


def cpu_flags() -> set:
    with open("/proc/cpuinfo") as info:
        return set(next(line for line in info if line.startswith("flags")).split(":")[1].split())


def test_auto_is_bf16_exactly_on_cpus_with_native_bf16():
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    result = resolve_in_a_new_process("auto", {})
    assert result.stdout.split("\n")[0] == ("bf16" if native else "no"), result.stdout


@pytest.mark.parametrize("env", [{}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, AVX2_ONLY])
def test_the_cpu_description_names_native_bf16_and_amx_as_the_kernels_will_use_them(env):
    code = "from colorize.engine.runtime import cpu_description\nprint(cpu_description())"
    described = run_in_a_new_process(code, env).stdout.strip()
    flags = cpu_flags()
    native = bool(flags & {"avx512_bf16", "amx_bf16"}) and env != AVX2_ONLY
    assert described.endswith("with native bf16 (AMX)") == (native and "amx_bf16" in flags and not env)
    assert ("with native bf16" in described) == native
    assert described.startswith("AVX2" if env == AVX2_ONLY else "AVX")


def test_auto_is_fp32_when_torch_and_onednn_are_limited_to_avx2():
    name, reason = resolve_in_a_new_process("auto", AVX2_ONLY).stdout.split("\n")[:2]
    assert name == "no" and "AVX2" in reason and "no native bf16" in reason


def test_bf16_asked_for_without_native_support_works_with_a_warning():
    result = resolve_in_a_new_process("bf16", AVX2_ONLY)
    assert result.stdout.startswith("bf16\n")
    assert "no native bf16" in result.stderr and "slower" in result.stderr


def test_fp32_is_another_name_for_no_and_fp16_needs_a_gpu():
    assert resolve_precision("fp32", cuda=False).name == resolve_precision("no", cuda=False).name == "no"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", cuda=False)


def test_sync_batchnorm_converts_one_process_and_refuses_cpu_processes():
    one = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    model = sync_batchnorm(create_model("fusion"), one)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert not any(type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d) for m in model.modules())
    two = SimpleNamespace(num_processes=2, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="train.sync_batchnorm needs GPUs"):
        sync_batchnorm(create_model("fusion"), two)
