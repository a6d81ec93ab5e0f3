"""The main job's closing line says where its wall time was measured: the CPU, its class and the thread policy."""

from __future__ import annotations

from mfh_cli import available_cores
from mfh_cli.engine.placement import X86_FEATURES, CpuFeatures
from mfh_cli.reproduce import execution_line
from mfh_cli.studies.plan import PlannedRun

EPYC = CpuFeatures("AMD EPYC", "x86", X86_FEATURES, frozenset({"avx2"}))


def planned(threads: int, precision: str = "fp32") -> PlannedRun:
    return PlannedRun("multifaceted", "mfh", "play", 0, (), "0123456789ab", "synthetic", threads, precision)


def test_execution_line_names_the_cpu_its_class_and_the_thread_policy():
    line = execution_line(EPYC, [planned(1), planned(1)], jobs=2, launcher=None)
    assert line == (f"measured on AMD EPYC (AVX2, no native bf16), {available_cores()} cores: 1 torch thread per run, "
                    "2 runs at once (--jobs 2), fp32")


def test_execution_line_shows_every_thread_count_and_precision_and_a_launcher():
    line = execution_line(EPYC, [planned(1), planned(4, "bf16")], jobs=2, launcher="hydra/launcher=joblib")
    assert "1/4 torch threads per run, runs dispatched by hydra/launcher=joblib, bf16/fp32" in line
