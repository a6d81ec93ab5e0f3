"""The device and precision decision on machines given to it (fake probe answers), and on this machine's probe."""

from __future__ import annotations

import pytest
import torch

from mfh_cli.config import compose, config_hash
from mfh_cli.engine.placement import (X86_FEATURES, CpuFeatures, CudaDevice, Machine, Placement, choose_kernels,
                                      choose_placement, hardware_record, probe_machine, resolve_placement)
from mfh_cli.errors import ConfigError

# What the probe answers on the two machine classes the project runs on (torch.cpu.get_capabilities names).
AVX2_EPYC = Machine(CpuFeatures("AMD EPYC", "x86", X86_FEATURES, frozenset({"avx2"})), cuda=None)
AMX_XEON = Machine(CpuFeatures("Intel(R) Xeon(R) Processor", "x86", X86_FEATURES,
                               frozenset({"avx2", "avx512_f", "avx512_bf16", "amx_tile", "amx_bf16"})), cuda=None)
AVX512_ONLY = Machine(CpuFeatures("Intel(R) Xeon(R) Gold 6148", "x86", X86_FEATURES,
                                  frozenset({"avx2", "avx512_f"})), cuda=None)
GRAVITON3 = Machine(CpuFeatures("Neoverse-V1", "arm", ("neon", "sve", "bf16", "sve_bf16"),
                                frozenset({"neon", "sve", "bf16", "sve_bf16"})), cuda=None)
A100 = CudaDevice("NVIDIA A100-SXM4-40GB", (8, 0))
T4 = CudaDevice("Tesla T4", (7, 5))


def test_bf16_on_an_avx2_cpu_is_refused_naming_the_missing_features_and_the_override():
    with pytest.raises(ConfigError) as refused:
        choose_placement("cpu", "bf16", False, AVX2_EPYC)
    message = str(refused.value)
    assert message.startswith("trainer.precision=bf16: this CPU (AMD EPYC) has no native bf16")
    assert "neither amx_bf16 nor avx512_bf16 (it has avx2)" in message
    assert "trainer.allow_emulated_bf16=true" in message and "trainer.precision=fp32 or auto" in message
    assert "\n" not in message


def test_avx512_without_its_bf16_extension_is_not_native_bf16():
    with pytest.raises(ConfigError, match=r"it has avx2, avx512_f\)"):
        choose_placement("cpu", "bf16", False, AVX512_ONLY)
    assert choose_placement("cpu", "auto", False, AVX512_ONLY).precision == "fp32"


def test_forced_bf16_runs_emulated_and_says_so():
    placement = choose_placement("cpu", "bf16", True, AVX2_EPYC)
    assert (placement.device, placement.precision, placement.emulated) == ("cpu", "bf16", True)


@pytest.mark.parametrize("machine, precision, native", [
    (AVX2_EPYC, "fp32", None), (AVX512_ONLY, "fp32", None), (AMX_XEON, "bf16", "amx_bf16"),
    (GRAVITON3, "bf16", "bf16"),
])
def test_auto_picks_bf16_exactly_where_it_is_native(machine, precision, native):
    placement = choose_placement("cpu", "auto", False, machine)
    assert (placement.precision, placement.native_bf16, placement.emulated) == (precision, native, False)


def test_explicit_choices_stand_where_the_machine_can_honour_them():
    assert choose_placement("cpu", "bf16", False, AMX_XEON).precision == "bf16"
    assert choose_placement("cpu", "fp32", False, AMX_XEON).precision == "fp32"  # auto only is automatic
    assert choose_placement("cpu", "fp32", False, AVX2_EPYC).precision == "fp32"


def test_device_auto_takes_the_gpu_and_its_bf16_rule_when_there_is_one():
    with_a100, with_t4 = Machine(AVX2_EPYC.cpu, A100), Machine(AMX_XEON.cpu, T4)
    assert choose_placement("auto", "auto", False, AVX2_EPYC) == choose_placement("cpu", "auto", False, AVX2_EPYC)
    on_a100 = choose_placement("auto", "auto", False, with_a100)
    assert (on_a100.device, on_a100.precision, on_a100.native_bf16) == ("cuda", "bf16", "compute capability 8.0")
    # The GPU decides, not the CPU: an AMX host with a T4 trains fp32 on the T4, and refuses bf16 there.
    assert choose_placement("cuda", "auto", False, with_t4).precision == "fp32"
    with pytest.raises(ConfigError, match=r"the GPU Tesla T4 has no native bf16 \(compute capability 7.5, bf16 "
                                          r"needs 8.0\).*trainer.allow_emulated_bf16=true"):
        choose_placement("cuda", "bf16", False, with_t4)
    assert choose_placement("cpu", "bf16", False, with_t4) == choose_placement("cpu", "bf16", False, AMX_XEON)


def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ConfigError, match="trainer.device=cuda: no CUDA device is available"):
        choose_placement("cuda", "fp32", False, AVX2_EPYC)


def test_the_run_id_names_the_precision_and_device_actually_used():
    def run_id(machine: Machine, *overrides: str) -> str:
        return config_hash(resolve_placement(compose(list(overrides)), machine)[0])

    assert run_id(AVX2_EPYC, "trainer.precision=auto") == run_id(AVX2_EPYC)  # auto → fp32: the fp32 run
    assert run_id(AMX_XEON, "trainer.precision=auto") == run_id(AMX_XEON, "trainer.precision=bf16")
    assert run_id(AMX_XEON, "trainer.precision=auto") != run_id(AMX_XEON)
    assert run_id(AVX2_EPYC, "trainer.device=auto") == run_id(AVX2_EPYC)
    # Forcing emulation changes where bf16 may run, not what it computes.
    assert run_id(AVX2_EPYC, "trainer.precision=bf16", "trainer.allow_emulated_bf16=true") == \
        run_id(AMX_XEON, "trainer.precision=bf16")
    resolved, _ = resolve_placement(compose(["trainer.precision=auto", "trainer.device=auto"]), AMX_XEON)
    assert (resolved.trainer.precision, resolved.trainer.device) == ("bf16", "cpu")


def test_resolving_leaves_the_given_config_as_it_was():
    cfg = compose(["trainer.precision=auto"])
    resolve_placement(cfg, AMX_XEON)
    assert cfg.trainer.precision == "auto"


def test_hardware_record_names_the_cpu_features_and_how_bf16_ran():
    record = hardware_record(choose_placement("cpu", "bf16", True, AVX2_EPYC), AVX2_EPYC)
    assert record["cpu"] == {"model": "AMD EPYC", "family": "x86", "features": ["avx2"],
                             "lacks": ["avx512_f", "avx512_bf16", "amx_tile", "amx_bf16"], "native_bf16": None}
    assert record["gpu"] is None and record["emulated_bf16"] is True
    on_gpu = Machine(AVX2_EPYC.cpu, A100)
    assert hardware_record(choose_placement("auto", "fp32", False, on_gpu), on_gpu)["gpu"] == \
        {"name": "NVIDIA A100-SXM4-40GB", "capability": [8, 0]}


def test_machine_classes_and_descriptions():
    assert AVX2_EPYC.cpu.machine_class == "AVX2, no native bf16"
    assert AMX_XEON.cpu.machine_class == "AVX-512 + AMX, native bf16"
    assert AVX512_ONLY.cpu.machine_class == "AVX-512, no native bf16"
    assert AVX2_EPYC.cpu.describe() == "AMD EPYC (x86: avx2; no avx512_f, avx512_bf16, amx_tile, amx_bf16)"


def test_this_machines_probe_agrees_with_torch():
    machine = probe_machine()
    capabilities = torch.cpu.get_capabilities()
    assert machine.cpu.present == {name for name in machine.cpu.checked if capabilities.get(name) is True}
    assert machine.cpu.model
    assert (machine.cuda is None) == (not torch.cuda.is_available())
    if machine.cpu.family == "x86":
        assert (machine.cpu.native_bf16 is not None) == (capabilities["amx_bf16"] or capabilities["avx512_bf16"])


def test_fused_kernels_run_on_the_cpu_in_fp32_where_built_and_eager_elsewhere_with_the_reason():
    cpu, bf16 = Placement("cpu", "fp32", None), Placement("cpu", "bf16", "amx_bf16")
    gpu = Placement("cuda", "fp32", None)
    built, unbuilt = (lambda: None), (lambda: "no C++ compiler (c++) on PATH")
    assert choose_kernels("fused", cpu, built) == ("fused", None)
    assert choose_kernels("eager", cpu, built) == ("eager", None)
    kernels, note = choose_kernels("fused", cpu, unbuilt)
    assert kernels == "eager" and note.endswith("no C++ compiler (c++) on PATH")
    for placement in (bf16, gpu):
        kernels, note = choose_kernels("fused", placement, built)
        assert kernels == "eager" and "CPU fp32 only" in note


def test_the_run_id_names_the_kernels_used():
    fused, _ = resolve_placement(compose(["trainer.kernels=fused"]))
    eager, placement = resolve_placement(compose(["trainer.kernels=eager"]))
    assert placement.kernels == "eager" and eager.trainer.kernels == "eager"
    assert (config_hash(fused) == config_hash(eager)) == (fused.trainer.kernels == "eager")
