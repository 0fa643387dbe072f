"""Training precision: bfloat16 autocast on CPUs with native bf16 arithmetic, fp32 elsewhere.

`auto` picks bf16 where the CPU has it (AVX512-BF16 or AMX, as oneDNN reports it at run time) and fp32
elsewhere; `bf16` asks for it (and fails on a CPU without it, rather than run an emulation slower than
fp32); `fp32` turns it off. Only the training forward pass runs under autocast: the weights, the optimizer
state and the gradients stay fp32 (autocast keeps fp32 master weights), and validation, threshold tuning,
the ONNX export and its parity check run in fp32 as before.
"""

import contextlib
from pathlib import Path

import torch

PRECISION_CHOICES = ("auto", "bf16", "fp32")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """oneDNN's own run-time check, confirmed by the CPU's flags (AVX512-BF16 or AMX-BF16): without
    them bf16 is emulated and slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if supported is not None and not supported():
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(requested: str) -> str:
    """The precision that will run: `bf16` or `fp32`."""
    if requested not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    native = cpu_has_native_bf16()
    if requested == "bf16" and not native:
        raise ValueError(
            "precision=bf16 needs a CPU with native bfloat16 (avx512_bf16 or amx_bf16 in lscpu); this one "
            "has neither: use precision=auto or fp32"
        )
    if requested == "auto":
        return "bf16" if native else "fp32"
    return requested


def autocast(precision: str):
    """The context the training forward pass runs in."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
