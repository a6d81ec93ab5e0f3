"""The fused ReLU → BatchNorm training kernel against the eager path, its reference (mfh_cli/models/parts/fused.py).

Tolerances: the two differ by float rounding (batch statistics, sums in another order), and the fused one is the
closer of the two to a float64 computation (checked below), so the bound is eager's own error: 5e-5 (+ 2e-5
relative) on normalised outputs; gradients summed over 1,024 rows within 1e-4 of their tensor's largest magnitude
(1e-3 through a whole model, whose 16-row batch makes BatchNorm's gradients nearly cancel).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfh_cli.models.parts.dense import DenseLayer, DenseOptions
from mfh_cli.models.parts.fused import SOURCE, build_key, cache_root, load_kernels, use_fused_kernels
from mfh_cli.models.parts.gates import gated_mix
from tests.models.golden.cases import CASES, GOLDEN_FILE, fixed_batch, schema_from_json, seeded_model

pytestmark = pytest.mark.skipif(load_kernels()[0] is None, reason=f"fused kernel not built: {load_kernels()[1]}")

# (groups, rows, channels, input read by every group): a G-stacked layer, one group, and a first layer whose one
# input every group reads (rows-first memory, as PLE's first experts and every level 0 produce it).
LAYOUTS = [(6, 1024, 32, False), (1, 1024, 100, False), (2, 1024, 512, True), (3, 7, 40, False)]


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, relative: float) -> None:
    """Every element within `relative` × the tensor's largest magnitude: a gradient summed over many rows carries
    rounding of the size of its large elements, so an element near zero is judged against that, not itself."""
    scale = float(expected.detach().abs().max())
    gap = float((actual - expected).detach().abs().max())
    assert gap <= relative * scale + 1e-7, f"largest difference {gap:.3g} against a scale of {scale:.3g}"


def layer_and_input(groups: int, rows: int, channels: int, shared_input: bool) -> tuple[DenseLayer, torch.Tensor]:
    torch.manual_seed(0)
    layer = DenseLayer(groups, 24, channels, DenseOptions(), hidden=True)
    with torch.no_grad():
        layer.batch_norm.weight.uniform_(0.5, 1.5)
        layer.batch_norm.bias.normal_()
    x = torch.randn(rows, 24).expand(groups, rows, 24) if shared_input else torch.randn(groups, rows, 24)
    return layer, (x * 2 + 0.5).requires_grad_(not shared_input)


def run_layer(layer: DenseLayer, x: torch.Tensor, fused: bool, gradient: torch.Tensor):
    """Output, input gradient, parameter gradients and moving statistics of one training pass."""
    layer = copy.deepcopy(layer)
    use_fused_kernels(layer, fused)
    x = x.detach().clone().requires_grad_(True) if x.requires_grad else x
    output = layer(x)
    output.backward(gradient)
    return (output.detach(), None if x.grad is None else x.grad, [p.grad for p in layer.parameters()],
            [layer.batch_norm.running_mean, layer.batch_norm.running_var])


@pytest.mark.parametrize("groups,rows,channels,shared_input", LAYOUTS)
def test_fused_layer_matches_eager_outputs_gradients_and_moving_statistics(groups, rows, channels, shared_input):
    layer, x = layer_and_input(groups, rows, channels, shared_input)
    gradient = torch.randn(groups, rows, channels)
    eager, fused = run_layer(layer, x, False, gradient), run_layer(layer, x, True, gradient)
    torch.testing.assert_close(fused[0], eager[0], rtol=2e-5, atol=5e-5)
    for fused_gradient, eager_gradient in zip([fused[1], *fused[2]], [eager[1], *eager[2]]):
        if eager_gradient is not None:
            assert_close_to_scale(fused_gradient, eager_gradient, 1e-4)
    for fused_statistic, eager_statistic in zip(fused[3], eager[3]):
        torch.testing.assert_close(fused_statistic, eager_statistic, rtol=1e-5, atol=1e-6)


def test_fused_layer_is_closer_to_float64_than_eager():
    layer, x = layer_and_input(2, 1024, 512, True)
    gradient = torch.randn(2, 1024, 512)
    exact = run_layer(layer.double(), x.double(), False, gradient.double())
    layer = layer.float()
    errors = {fused: (run_layer(layer, x, fused, gradient)[0].double() - exact[0]).abs().max().item()
              for fused in (False, True)}
    assert errors[True] <= errors[False]


@pytest.mark.parametrize("groups,rows,channels,shared_input", LAYOUTS)
def test_fused_eval_pass_matches_eager_and_runs_only_without_a_gradient(groups, rows, channels, shared_input):
    """Eval mode: predicting (no gradient) goes through the fused in-place ReLU → BatchNorm pass, within float
    rounding of eager; with a gradient wanted, eval mode stays eager bit for bit."""
    layer, x = layer_and_input(groups, rows, channels, shared_input)
    with torch.no_grad():
        layer.batch_norm.running_mean.normal_()
        layer.batch_norm.running_var.uniform_(0.5, 2.0)
    layer.eval()
    eager_with_gradient = layer(x)
    with torch.no_grad():
        eager = layer(x)
        use_fused_kernels(layer, True)
        fused = layer(x)
    torch.testing.assert_close(fused, eager, rtol=1e-6, atol=1e-6)
    assert torch.equal(layer(x), eager_with_gradient)


def test_fused_layer_gives_the_same_bits_at_one_and_two_threads():
    """Each block of channels is one thread's whole work, so the thread count cannot reorder a sum."""
    layer, x = layer_and_input(2, 1024, 512, True)
    gradient = torch.randn(2, 1024, 512)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(run_layer(layer, x, True, gradient))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][2], results[1][2]))


def test_a_layer_without_relu_or_batch_norm_is_not_fused():
    assert DenseLayer(1, 4, 4, DenseOptions(activation="gelu"), hidden=True).fusable is False
    assert DenseLayer(1, 4, 4, DenseOptions(batch_norm=None), hidden=True).fusable is False
    assert DenseLayer(1, 4, 4, DenseOptions(), hidden=False).fusable is False


# The golden cases (the authors' graph, BatchNorm fused with ReLU) and the default recipe's models (no BatchNorm: the
# gates and mixing are what fuses), where they fuse anything.
FUSED_CASES = CASES + [(f"{name}@compact, default recipe", [f"model={name}", "size=compact"])
                       for name in ("mfh", "hmtl", "flat", "heter_abl", "biasnet", "mmoe", "cgc", "ple")]


@pytest.mark.parametrize("label,overrides", FUSED_CASES, ids=[label for label, _ in FUSED_CASES])
def test_every_model_trains_through_the_fused_path_like_the_eager_one(label, overrides):
    """Every model of the zoo: train-mode outputs and every parameter's gradient, fused against eager."""
    import json
    schema = schema_from_json(json.loads(GOLDEN_FILE.read_text())["schema"])
    inputs = fixed_batch(schema)
    results = {}
    for fused in (False, True):
        model = seeded_model(overrides, schema)
        assert use_fused_kernels(model, fused) > 0
        model.train()
        outputs = model(*inputs)
        outputs.square().sum().backward()
        results[fused] = (outputs.detach(), {name: p.grad for name, p in model.named_parameters()})
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-4)
    for name, eager_gradient in results[False][1].items():
        assert_close_to_scale(results[True][1][name], eager_gradient, 1e-3)


@pytest.mark.parametrize("label,overrides", FUSED_CASES, ids=[label for label, _ in FUSED_CASES])
def test_every_model_predicts_through_the_fused_path_like_the_eager_one(label, overrides):
    """Every model of the zoo in eval mode without a gradient (how a run scores its splits): fused against eager,
    after a training pass has moved the moving statistics off their initial values."""
    import json
    schema = schema_from_json(json.loads(GOLDEN_FILE.read_text())["schema"])
    inputs = fixed_batch(schema)
    outputs = {}
    for fused in (False, True):
        model = seeded_model(overrides, schema)
        model.train()
        model(*inputs)  # moving statistics from a batch (eager), the same for both
        use_fused_kernels(model, fused)
        model.eval()
        with torch.no_grad():
            outputs[fused] = model(*inputs)
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows_first", [False, True])
@pytest.mark.parametrize("per_branch,shared,width,with_shared_gate", [(2, 2, 64, True), (1, 1, 32, False),
                                                                      (0, 4, 16, True), (3, 0, 8, False)])
def test_fused_gates_and_mixing_match_eager_with_gradients(rows_first, per_branch, shared, width, with_shared_gate):
    """gates.gated_mix (softmax of the scores, then the mixing) through the C++ loop against the eager softmax and
    products, experts stored either way, the outputs' gradient strided; MMoE's all-shared and a layer without shared
    experts included."""
    torch.manual_seed(0)
    copies, rows, branches = 2, 300, 3
    experts_count = branches * per_branch + shared
    stored = torch.randn(rows, copies, experts_count, width).transpose(0, 1) if rows_first else \
        torch.randn(copies, rows, experts_count, width)
    branch_scores = 3 * torch.randn(copies, rows, branches, per_branch + shared)
    shared_scores = 3 * torch.randn(copies, rows, 1, experts_count) if with_shared_gate else None
    coefficients = torch.randn(copies, branches, rows, width)
    results = []
    for fused_kernel in (False, True):
        inputs = [t.detach().clone().requires_grad_(True) if t is not None else None
                  for t in (stored, branch_scores, shared_scores)]
        branch_output, shared_output = gated_mix(inputs[0], inputs[1], per_branch, inputs[2], "softmax",
                                                 fused_kernel)
        # the branch outputs' gradient arrives in another layout (as from the next layer's transpose)
        loss = (branch_output.transpose(1, 2).contiguous().square() * coefficients).sum() + \
            (0 if shared_output is None else shared_output.sin().sum())
        loss.backward()
        results.append([branch_output, shared_output, *(t.grad for t in inputs if t is not None)])
    for eager, fused in zip(*results):
        if eager is not None:
            assert_close_to_scale(fused, eager, 1e-5)


def test_fused_mixing_leaves_the_sigmoid_gate_to_the_eager_path():
    """Only the softmax gate is fused: a sigmoid gate's output is the eager one bit for bit."""
    torch.manual_seed(0)
    experts, scores = torch.randn(1, 50, 4, 8), torch.randn(1, 50, 2, 2)
    eager = gated_mix(experts, scores, 1, None, "sigmoid", fused_kernel=False)[0]
    assert torch.equal(gated_mix(experts, scores, 1, None, "sigmoid", fused_kernel=True)[0], eager)


def test_a_built_kernel_loads_without_a_compiler_from_its_own_copy_of_the_source(tmp_path: Path):
    """Once built, a process imports the kernel without a compiler or a ninja run; the build reads a copy of the
    source in its folder, so every checkout of the same source shares it instead of rebuilding it."""
    probe = "from mfh_cli.models.parts.fused import load_kernels; module, why = load_kernels(); print(module, why)"
    environment = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith(" None"), result.stderr
    assert result.stdout.startswith("<module 'mfh_relu_batch_norm_") and result.stderr == ""
    folder = cache_root() / f"mfh_relu_batch_norm_{build_key()}"
    assert (folder / SOURCE.name).read_text() == SOURCE.read_text()
    assert str(SOURCE) not in (folder / "build.ninja").read_text()
