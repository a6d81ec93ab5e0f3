"""Where a run computes and in which precision: the machine's probes and the one decision made from them.

`choose_placement` takes every device and precision decision from the trainer config and the probes' answers
(passed in, so tests give it any machine); `resolve_placement` probes this machine once and writes the choice
into the config before the run id is hashed, so the id names what was actually used. `choose_kernels` does the
same for `trainer.kernels`: the fused C++ training kernel where it applies and is built, else eager.

bf16 is native where the hardware has bf16 instructions: AMX (amx_bf16) or AVX512_BF16 on x86, BF16 or SVE-BF16
on ARM, compute capability 8.0 or later on a CUDA GPU. Elsewhere PyTorch emulates it: on an AVX2-only EPYC mfh
at the paper preset trained 36× slower in bf16 than in fp32 (issue 17), so bf16 there is refused unless forced.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts.fused import load_kernels

X86_FEATURES = ("avx2", "avx512_f", "avx512_bf16", "amx_tile", "amx_bf16")  # torch.cpu.get_capabilities names
ARM_FEATURES = ("neon", "sve", "bf16", "sve_bf16")
NATIVE_BF16 = {"x86": ("amx_bf16", "avx512_bf16"), "arm": ("bf16", "sve_bf16")}  # any one makes bf16 native
CUDA_NATIVE_BF16 = (8, 0)  # compute capability from which a GPU has bf16 tensor cores (Ampere)
FORCE_BF16 = "trainer.allow_emulated_bf16=true"
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # resolved precision → autocast dtype (None: off)


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU as the precision decision and the benchmarks see it: model name, family, the features looked for
    (`checked`) and those present (`present`)."""

    model: str
    family: str  # "x86", "arm" or "other"
    checked: tuple[str, ...]
    present: frozenset[str]

    @property
    def native_bf16(self) -> str | None:
        """The feature that makes bf16 native on this CPU (e.g. amx_bf16), None when there is none."""
        return next((name for name in NATIVE_BF16.get(self.family, ()) if name in self.present), None)

    @property
    def absent(self) -> list[str]:
        return [name for name in self.checked if name not in self.present]

    @property
    def machine_class(self) -> str:
        """The class its benchmark figures belong to, e.g. 'AVX2, no native bf16' or 'AVX-512 + AMX, native bf16'."""
        if self.family == "x86":
            vector = "AVX-512" if "avx512_f" in self.present else "AVX2" if "avx2" in self.present else "pre-AVX2"
            kind = vector + (" + AMX" if "amx_bf16" in self.present else
                             " + AVX512_BF16" if "avx512_bf16" in self.present else "")
        elif self.family == "arm":
            kind = "ARM + SVE" if "sve" in self.present else "ARM"
        else:
            kind = platform.machine()
        return f"{kind}, {'native' if self.native_bf16 else 'no native'} bf16"

    def describe(self) -> str:
        """One line: 'AMD EPYC (x86: avx2; no avx512_f, avx512_bf16, amx_tile, amx_bf16)'."""
        present = ", ".join(name for name in self.checked if name in self.present) or "none of the features"
        absent = f"; no {', '.join(self.absent)}" if self.absent else ""
        return f"{self.model} ({self.family}: {present}{absent})"

    def record(self) -> dict:
        """For metrics.json and benchmark records."""
        return {"model": self.model, "family": self.family, "features": sorted(self.present),
                "lacks": self.absent, "native_bf16": self.native_bf16}


@dataclass(frozen=True)
class CudaDevice:
    """The CUDA device a run would use."""

    name: str
    capability: tuple[int, int]

    @property
    def native_bf16(self) -> str | None:
        """'compute capability 8.0' when the GPU computes bf16 natively, None when it would be emulated."""
        if self.capability >= CUDA_NATIVE_BF16:
            return "compute capability {}.{}".format(*self.capability)
        return None


@dataclass(frozen=True)
class Placement:
    """What a run uses: device ('cpu' or 'cuda'), precision ('fp32' or 'bf16') and what makes bf16 native there."""

    device: str
    precision: str
    native_bf16: str | None  # the feature of the chosen device; None: no native bf16 (bf16 is then emulated)
    kernels: str = "eager"  # "fused" or "eager" (trainer.kernels as resolved by choose_kernels)
    kernels_note: str | None = None  # why trainer.kernels=fused runs eager here

    @property
    def emulated(self) -> bool:
        return self.precision == "bf16" and self.native_bf16 is None


@dataclass(frozen=True)
class Machine:
    """What the probes found: the CPU, and the CUDA device (None: none)."""

    cpu: CpuFeatures
    cuda: CudaDevice | None


def choose_placement(device: str, precision: str, allow_emulated_bf16: bool, machine: Machine) -> Placement:
    """Every device and precision decision of a run, from trainer.device, trainer.precision and
    trainer.allow_emulated_bf16 on `machine`. A choice the machine cannot honour is one ConfigError line."""
    cuda = machine.cuda
    if device == "cuda" and cuda is None:
        raise ConfigError(f"trainer.device=cuda: no CUDA device is available (torch {torch.__version__}); use "
                          "trainer.device=cpu or auto")
    on_cuda = cuda is not None and device in ("cuda", "auto")
    native = cuda.native_bf16 if on_cuda else machine.cpu.native_bf16
    chosen = "cuda" if on_cuda else "cpu"
    if precision == "auto":  # the feature rule: bf16 exactly where it is native
        return Placement(chosen, "bf16" if native else "fp32", native)
    if precision == "bf16" and native is None and not allow_emulated_bf16:
        reason = missing_gpu_bf16(cuda) if on_cuda else missing_cpu_bf16(machine.cpu)
        raise ConfigError(f"trainer.precision=bf16: {reason}, so bf16 would be emulated and many times slower "
                          f"than fp32; use trainer.precision=fp32 or auto, or force it with {FORCE_BF16}")
    return Placement(chosen, precision, native)


def choose_kernels(kernels: str, placement: Placement,
                   unavailable: Callable[[], str | None]) -> tuple[str, str | None]:
    """trainer.kernels as it will run, and why fused falls back to eager: the fused kernel is a float32 CPU
    kernel, and needs a build (`unavailable()`: None once built, else why not; models/parts/fused.py)."""
    if kernels == "eager":
        return "eager", None
    if placement.device != "cpu" or placement.precision != "fp32":
        return "eager", f"the fused kernel is CPU fp32 only (this run: {placement.device} {placement.precision})"
    reason = unavailable()
    if reason is not None:
        return "eager", f"the fused kernel is not available: {reason}"
    return "fused", None


def missing_cpu_bf16(cpu: CpuFeatures) -> str:
    """Why this CPU has no native bf16, naming the features it lacks and those it has."""
    needed = NATIVE_BF16.get(cpu.family)
    lacks = f"neither {needed[0]} nor {needed[1]}" if needed else "no bf16 instructions torch knows of"
    has = ", ".join(name for name in cpu.checked if name in cpu.present) or "none of the features looked for"
    return f"this CPU ({cpu.model}) has no native bf16, {lacks} (it has {has})"


def missing_gpu_bf16(cuda: CudaDevice) -> str:
    return ("the GPU {} has no native bf16 (compute capability {}.{}, bf16 needs {}.{})"
            .format(cuda.name, *cuda.capability, *CUDA_NATIVE_BF16))


def resolve_placement(cfg: DictConfig, machine: Machine | None = None) -> tuple[DictConfig, Placement]:
    """A copy of `cfg` with trainer.device, trainer.precision and trainer.kernels set to what `machine` (default:
    this one) will use, auto resolved and an impossible choice refused, and that choice. The first fused run on a
    machine builds the kernel (about a minute, once)."""
    trainer = cfg.trainer
    placement = choose_placement(str(trainer.device), str(trainer.precision), bool(trainer.allow_emulated_bf16),
                                 machine or probe_machine())
    kernels, note = choose_kernels(str(trainer.kernels), placement, lambda: load_kernels()[1])
    placement = dataclasses.replace(placement, kernels=kernels, kernels_note=note)
    resolved = copy.deepcopy(cfg)
    resolved.trainer.device, resolved.trainer.precision = placement.device, placement.precision
    resolved.trainer.kernels = kernels
    return resolved, placement


@functools.cache
def probe_machine() -> Machine:
    """This machine's CPU (torch's own runtime detection, cpuinfo) and CUDA device, probed once per process."""
    capabilities = torch.cpu.get_capabilities()
    family, checked = (("x86", X86_FEATURES) if "avx2" in capabilities else
                       ("arm", ARM_FEATURES) if "neon" in capabilities else ("other", ()))
    present = frozenset(name for name in checked if capabilities.get(name) is True)
    model = str(capabilities.get("cpu_name") or platform.processor() or platform.machine())
    cuda = None
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        cuda = CudaDevice(torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))
    return Machine(CpuFeatures(model, family, checked, present), cuda)


def hardware_record(placement: Placement, machine: Machine) -> dict:
    """metrics.json's `hardware`: the CPU and its features, the GPU when used, and whether bf16 was native."""
    gpu = machine.cuda if placement.device == "cuda" else None
    return {"cpu": machine.cpu.record(),
            "gpu": None if gpu is None else {"name": gpu.name, "capability": list(gpu.capability)},
            "native_bf16": placement.native_bf16, "emulated_bf16": placement.emulated,
            "kernels": placement.kernels, "kernels_note": placement.kernels_note}
