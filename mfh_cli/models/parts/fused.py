"""Fused CPU float32 training kernels: a hidden layer's ReLU → BatchNorm, and the gated mixing of experts.

A compact-preset step is bound by memory passes over activations and by many tiny products, not by matmul FLOPs
(benchmarks/results.md, issue "throughput"): eager ReLU + BatchNorm + their copies make about ten passes per hidden
layer and step, the kernel in `relu_batch_norm.cpp` four; mixing E experts per row is one small matrix product per
row, which PyTorch's batched matmul runs far below its speed on large ones. They are built with PyTorch's extension
API on first use, once per machine (`-march=native`, so the cache is keyed by the CPU), under
`~/.cache/mfh/kernels` (`$XDG_CACHE_HOME`); where they cannot be built (no C++ compiler or ninja) the eager path
runs and the run records why (`trainer.kernels`, engine/placement.py). The eager path stays the reference:
tests/models/parts/test_fused.py holds both to each other.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

from mfh_cli.files import write_text_atomically

SOURCE = Path(__file__).with_name("relu_batch_norm.cpp")
FLAGS = ["-O3", "-march=native"]
FAILED = "failed.txt"  # in the build folder: why the last build failed; delete the folder to try again


def cache_root() -> Path:
    """Where built kernels live: $XDG_CACHE_HOME/mfh/kernels, else ~/.cache/mfh/kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mfh" / "kernels"


def build_key() -> str:
    """What a build depends on: the source and its flags, torch, Python, and the CPU (the kernel is built for this
    CPU)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                     "")
    except OSError:
        flags = ""
    capabilities = torch.cpu.get_capabilities()
    parts = [SOURCE.read_text(), " ".join(FLAGS), torch.__version__, sys.version, platform.machine(),
             str(capabilities.get("cpu_name")), flags]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


@functools.cache
def load_kernels() -> tuple[ModuleType | None, str | None]:
    """The built extension and None, or None and why it is not available (one line). Built once per machine."""
    name = f"mfh_relu_batch_norm_{build_key()}"
    folder = cache_root() / name
    library = folder / f"{name}.so"
    if library.exists():
        try:  # built: import it directly, without a ninja run under the build lock in every process
            return _import_library(name, library), None
        except (ImportError, OSError):  # another process is still linking it: build (or wait) as below
            pass
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return None, f"no C++ compiler ({compiler}) on PATH"
    from torch.utils.cpp_extension import is_ninja_available, load
    if not is_ninja_available():
        return None, "ninja is not installed (pip install ninja)"
    if (folder / FAILED).exists():
        return None, f"its build failed before ({folder / FAILED}; delete that folder to try again)"
    folder.mkdir(parents=True, exist_ok=True)
    if not library.exists():
        print("building the fused training kernels (once per machine, about a minute)", file=sys.stderr, flush=True)
    # Built from a copy in the build folder, so every checkout of the same source shares one build (ninja
    # rebuilds when a source's path changes).
    source = folder / SOURCE.name
    if not source.exists():
        write_text_atomically(source, SOURCE.read_text())
    try:
        module = load(name=name, sources=[str(source)], extra_cflags=FLAGS,
                      build_directory=str(folder), verbose=False)
    except Exception as error:  # a compiler or linker error: record it, run eager
        reason = " ".join(str(error).split())[-300:]
        (folder / FAILED).write_text(f"{reason}\n")
        return None, f"its build failed ({folder / FAILED})"
    return module, None


def _import_library(name: str, library: Path) -> ModuleType:
    """Import the built extension module `name` from its shared library."""
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_fused_kernels(module: torch.nn.Module, on: bool) -> int:
    """Turn the fused training kernels on or off in every part of `module` that has one (`fusable`); how many."""
    parts = [part for part in module.modules() if getattr(part, "fusable", False)]
    for part in parts:
        part.use_fused = on
    return len(parts)


def supports(x: torch.Tensor) -> bool:
    """Whether the kernels take x: float32 on the CPU (not under bf16 autocast), with the kernels built."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and load_kernels()[0] is not None


def _rows_first_or_contiguous(x: torch.Tensor) -> torch.Tensor:
    """x itself when its memory is [G, B, C] or rows-first [B, G, C] (the kernel's two layouts), else a copy."""
    return x if x.is_contiguous() or x.transpose(0, 1).is_contiguous() else x.contiguous()


def relu_affine_(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """z ← max(z, 0)·scale + shift in place, one scale and shift per (group, channel) of z [G, B, C] (eval mode's
    ReLU → BatchNorm); z in one of the kernel's two layouts (a copy otherwise, returned)."""
    kernels, _ = load_kernels()
    return kernels.relu_affine_(_rows_first_or_contiguous(z), scale.contiguous(), shift.contiguous())


class ReluBatchNorm(torch.autograd.Function):
    """y = BatchNorm(ReLU(z)) with batch statistics over the rows of each (group, channel); also returns the
    batch mean and inverse std (no gradient) for the moving statistics."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epsilon: float):
        kernels, _ = load_kernels()
        z = _rows_first_or_contiguous(z)
        output, mean, inverse_std = kernels.forward(z, weight, bias, epsilon)
        ctx.save_for_backward(z, weight, mean, inverse_std)
        ctx.mark_non_differentiable(mean, inverse_std)
        return output, mean, inverse_std

    @staticmethod
    def backward(ctx, gradient: torch.Tensor, _mean: torch.Tensor, _inverse_std: torch.Tensor):
        z, weight, mean, inverse_std = ctx.saved_tensors
        if gradient.stride() != z.stride():  # the kernel reads the gradient in z's layout
            gradient = torch.empty_like(z).copy_(gradient)
        kernels, _ = load_kernels()
        z_gradient, weight_gradient, bias_gradient = kernels.backward(gradient, z, weight, mean, inverse_std)
        return z_gradient, weight_gradient, bias_gradient, None


class GatedMix(torch.autograd.Function):
    """The softmax gates and the mixing of experts (gates.gated_mix) in one C++ loop over the rows: branch scores
    [S,B,K,C], shared scores [S,B,E] or None, experts [S,B,E,H] → branch outputs [S,B,K,H], shared output [S,B,H]
    or None."""

    @staticmethod
    def forward(ctx, branch_scores: torch.Tensor, shared_scores: torch.Tensor | None, experts: torch.Tensor,
                per_branch: int):
        kernels, _ = load_kernels()
        shared = shared_scores.contiguous() if shared_scores is not None else branch_scores.new_empty(0)
        output, shared_output, weights, shared_weights = kernels.gated_mix_forward(
            branch_scores.contiguous(), shared, experts, per_branch)
        ctx.save_for_backward(weights, shared_weights, experts)
        ctx.per_branch, ctx.has_shared = per_branch, shared_scores is not None
        return output, shared_output if ctx.has_shared else None

    @staticmethod
    def backward(ctx, gradient: torch.Tensor | None, shared_gradient: torch.Tensor | None):
        weights, shared_weights, experts = ctx.saved_tensors
        kernels, _ = load_kernels()
        if gradient is None:
            gradient = weights.new_zeros(*weights.shape[:3], experts.shape[3])
        if ctx.has_shared and shared_gradient is None:
            shared_gradient = weights.new_zeros(weights.shape[0], weights.shape[1], experts.shape[3])
        branch_gradient, shared_scores_gradient, experts_gradient = kernels.gated_mix_backward(
            gradient, shared_gradient if ctx.has_shared else weights.new_empty(0), weights, shared_weights, experts,
            ctx.per_branch)
        return branch_gradient, shared_scores_gradient if ctx.has_shared else None, experts_gradient, None
