"""The training loop: batches are slices of a permutation, early stopping on the validation loss, history.

Shape letters: N rows, B batch rows, T behaviours of the task grid, C cells of the run (a task is a behaviour × a
cell: the user groups on a two-facet grid, group × scenario on a three-facet one; tasks.cell_facets).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch.optim.adam import adam
from torch.optim.sgd import sgd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mfh_cli.data import SPLITS, Dataset
from mfh_cli.engine.distributed import Context
from mfh_cli.engine.placement import AUTOCAST_DTYPES
from mfh_cli.errors import RunError
from mfh_cli.models import build_model
from mfh_cli.models.loss import elementwise_loss
from mfh_cli.models.parts.dense import precise_statistics
from mfh_cli.models.parts.fused import use_fused_kernels
from mfh_cli.models.weighting import LossWeighting, build_weighting
from mfh_cli.tasks import USER_GROUP, task_name


PRECISE_BN_STREAM = 104_729  # added to the run's seed: the precise BatchNorm pass draws its own rows


@dataclass
class Split:
    """The tensors of one split restricted to the task grid's behaviours, on the training device."""

    categorical: torch.Tensor  # [N, C]
    dense: torch.Tensor  # [N, D]
    cell: torch.Tensor  # [N] the row's cell of the run (its user group on a two-facet grid)
    labels: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T] label exists (the model reads each row's own cell, SPEC §3)
    oracle: torch.Tensor | None = None  # [N, T]
    user: torch.Tensor | None = None  # [N] user id (Dataset.user: raw ids, for per-user metrics such as gAUC)

    def __len__(self) -> int:
        return int(self.cell.shape[0])

    def rows(self, index: torch.Tensor | slice) -> Split:
        """The rows at `index`: a copy for a tensor of row numbers, views for a slice."""
        return Split(self.categorical[index], self.dense[index], self.cell[index], self.labels[index],
                     self.mask[index], None if self.oracle is None else self.oracle[index],
                     None if self.user is None else self.user[index])


def prepare_splits(dataset: Dataset, behaviours: list[str], device: torch.device,
                   cells: dict[str, list[str]] | None = None) -> dict[str, Split]:
    """Slice the dataset into train/validation/test for the given behaviours and the run's cell facets (`cells`,
    `model.cell_facets`; None: the user groups), moved to `device` once.

    A split whose rows are one contiguous range (time-ordered data) is a view of the dataset, not a copy, so
    that 1e7 rows do not hold their features twice in memory.
    """
    columns = dataset.behaviour_columns(behaviours)
    cell = dataset.group if cells is None or list(cells) == [USER_GROUP.name] else dataset.cells(cells)
    every_column = columns == list(range(dataset.labels.shape[1]))
    splits = {}
    for index, name in enumerate(SPLITS):
        rows = _contiguous_or_mask(dataset.split == index)

        def rows_of(values: torch.Tensor) -> torch.Tensor:
            return values[rows].to(device)

        def labels_of(values: torch.Tensor) -> torch.Tensor:  # [N, L] → the task grid's columns [N, T]
            chosen = values[rows]
            return (chosen if every_column else chosen[:, columns]).to(device)

        splits[name] = Split(rows_of(dataset.categorical), rows_of(dataset.dense), rows_of(cell),
                             labels_of(dataset.labels), labels_of(dataset.label_mask),
                             None if dataset.oracle is None else labels_of(dataset.oracle),
                             rows_of(dataset.user))
    return splits


def _contiguous_or_mask(chosen: torch.Tensor) -> slice | torch.Tensor:
    """The rows where `chosen` [N] is true: a slice when they are one contiguous range, else the mask itself."""
    positions = chosen.nonzero().squeeze(1)
    if len(positions) == 0 or int(positions[-1]) - int(positions[0]) + 1 == len(positions):
        first = int(positions[0]) if len(positions) else 0
        return slice(first, first + len(positions))
    return chosen


@dataclass
class FitResult:
    best_epoch: int  # the epoch whose weights the run keeps (the last one under trainer.selection=last)
    epochs_run: int
    train_seconds: float
    samples: int
    validation_losses: list[float] = field(default_factory=list)  # one per epoch run
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Trains one model on one dataset's splits; `fit` restores the best validation epoch's weights."""

    def __init__(self, model: torch.nn.Module, splits: dict[str, Split], trainer: DictConfig,
                 weighting: LossWeighting, seed: int, context: Context = Context(), show_progress: bool = False,
                 base_model: torch.nn.Module | None = None):
        self.model, self.splits, self.config, self.context = model, splits, trainer, context
        self.base_model = model if base_model is None else base_model  # uncompiled: state dict, parameter counts
        self.weighting = weighting  # the loss of the [B, T] terms (models/weighting.py); may hold learned weights
        self.kinds: list[str] = list(model.kinds)
        self.cells: list[str] = list(model.cells)  # the run's cells: metrics, history and loss weights per cell
        self.behaviours: list[str] = list(model.behaviours)
        self.device = splits["train"].labels.device
        self.seed = seed
        self.order = torch.Generator().manual_seed(seed)  # data order, separate from the init stream
        self.precision = AUTOCAST_DTYPES[str(trainer.precision)]  # resolved by engine/placement: fp32 or bf16
        self.show_progress = show_progress and context.is_main
        self.flat_parameters = FlatParameters(model, weighting)  # the weighting's own parameters train too
        self.optimizer = make_optimizer(self.flat_parameters.values, trainer)
        # Weight averaging (trainer.ema_decay): an exponential moving average of the flat parameters, updated after
        # every step; what is evaluated, selected and kept (`averaged_weights`). None: the weights as trained.
        self.ema_decay = None if trainer.get("ema_decay") is None else float(trainer.ema_decay)
        self.averaged = self.flat_parameters.values.detach().clone() if self.ema_decay is not None else None
        self.step = 0
        self.history: list[dict] = []

    def autocast(self):
        if self.precision is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision)

    def forward(self, batch: Split) -> torch.Tensor:
        with self.autocast():
            outputs = self.model(batch.categorical, batch.dense, batch.cell)
        return outputs.float()

    @torch.no_grad()
    def predict(self, split: Split) -> torch.Tensor:
        """Raw outputs [N, T] in eval mode, in batches of trainer.eval_batch_size."""
        self.model.eval()
        size = int(self.config.eval_batch_size)
        parts = [self.forward(split.rows(slice(start, start + size))) for start in range(0, len(split), size)]
        return torch.cat(parts) if parts else torch.empty(0, len(self.behaviours), device=self.device)

    def loss_on(self, split: Split, name: str = "validation") -> float:
        """The SPEC §3 loss (configured task weights, not learned ones) over a whole split: the early-stopping
        criterion; a non-finite one is a RunError."""
        outputs = self.predict(split)
        elementwise = elementwise_loss(outputs, split.labels, self.kinds)
        loss = float(self.weighting.fixed_loss(elementwise, split.mask, split.cell))
        if not math.isfinite(loss):
            raise RunError(f"{name} loss is {loss} after step {self.step} ({name} split, "
                           f"{self.first_non_finite(elementwise, split)}): the run diverged; lower trainer.lr; "
                           "no run directory was written")
        return loss

    def first_non_finite(self, values: torch.Tensor, rows: Split) -> str:
        """'task <behaviour>_<cell>' of the first active value of `values` [N, T] that is NaN or infinite."""
        bad = rows.mask & ~torch.isfinite(values)
        if not bad.any():
            return "task unknown: the network produced a non-finite value outside the masked terms"
        row, column = (int(i) for i in bad.nonzero()[0])
        return f"task {task_name(self.behaviours[column], self.cells[int(rows.cell[row])])}"

    def cell_sums(self, elementwise: torch.Tensor, batch: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """Per (cell, behaviour) sums and counts of a batch's losses over rows whose label exists: [C, T] each."""
        masked = torch.where(batch.mask, elementwise.detach(), torch.zeros_like(elementwise))
        sums = torch.zeros(len(self.cells), len(self.behaviours), dtype=torch.float64, device=self.device)
        counts = torch.zeros_like(sums)
        sums.index_add_(0, batch.cell, masked.double())
        counts.index_add_(0, batch.cell, batch.mask.double())
        return sums, counts

    def history_rows(self, epoch: int, split: str, sums: torch.Tensor, counts: torch.Tensor) -> list[dict]:
        means = (sums / counts.clamp(min=1)).cpu()
        present = (counts > 0).cpu()
        return [{"step": self.step, "epoch": epoch, "split": split, "group": cell, "task": behaviour,
                 "loss": float(means[c, t])}
                for c, cell in enumerate(self.cells) for t, behaviour in enumerate(self.behaviours)
                if present[c, t]]

    def test_history(self, epoch: int, test_rows: Split) -> list[dict]:
        outputs = self.predict(test_rows)
        elementwise = elementwise_loss(outputs, test_rows.labels, self.kinds)
        self.model.train()
        return self.history_rows(epoch, "test", *self.cell_sums(elementwise, test_rows))


    def train_step(self, batch: Split, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this rank's `batch`: the loss and the per-row losses [B, T] (for the history)."""
        elementwise = elementwise_loss(self.forward(batch), batch.labels, self.kinds)
        if self.config.nan_at_step is not None and self.step == int(self.config.nan_at_step):
            elementwise = inject_nan(elementwise, batch.mask)
        loss = self.weighting(elementwise, batch.mask, batch.cell)
        # Scale to the global number of active terms so summed gradients equal the whole batch's.
        totals = self.context.sum(torch.tensor([float(batch.mask.sum()), float(not torch.isfinite(loss))],
                                               device=self.device))
        if totals[1] > 0:
            raise RunError(f"non-finite training loss at step {self.step} (epoch {epoch}, "
                           f"{self.first_non_finite(elementwise, batch)}): lower trainer.lr or check the labels; "
                           "no run directory was written")
        self.flat_parameters.zero_grad()
        (loss * (float(batch.mask.sum()) / max(float(totals[0]), 1.0))).backward()
        self.context.sum_gradients([self.flat_parameters.values])
        self.optimizer.step()
        self.step += 1
        if self.averaged is not None:
            # TF's ExponentialMovingAverage with num_updates: the decay ramps up, so early weights fade fast.
            decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
            self.averaged.lerp_(self.flat_parameters.values.detach(), 1.0 - decay)
        return loss, elementwise

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the block the model holds the averaged weights (trainer.ema_decay), the trained ones after it;
        a no-op without averaging."""
        if self.averaged is None:
            yield
            return
        values = self.flat_parameters.values.detach()
        trained = values.clone()
        values.copy_(self.averaged)
        try:
            yield
        finally:
            values.copy_(trained)

    @torch.no_grad()
    def recompute_batch_norm(self, batches: int) -> None:
        """Precise BatchNorm (trainer.precise_bn_batches, Wu & Johnson 2021): every BatchNorm's moving statistics
        become the equal average over `batches` training batches (in training mode, no gradient) of the weights the
        run keeps. Its own generator, seeded by the run's seed, draws the rows, so the data order is untouched."""
        train, size = self.splits["train"], int(self.config.batch_size)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed + PRECISE_BN_STREAM))
        self.model.train()
        with precise_statistics(self.model) as layers:
            if not layers:
                return
            for start in range(0, min(batches * size, len(train) - size + 1), size):
                batch = train.rows(order[start:start + size].to(self.device))
                with self.autocast():
                    self.model(batch.categorical, batch.dense, batch.cell)

    def fit(self, after_epoch: Callable[[int, float], None] | None = None) -> FitResult:
        """Train until max_epochs or early stopping; `after_epoch(epoch, validation_loss)` is called after each
        epoch's validation loss (`mfh tune` reports it to its pruner; whatever it raises stops the fit there)."""
        train, config = self.splits["train"], self.config
        world, rank = self.context.world, self.context.rank
        batch_size = int(config.batch_size)
        history_every = int(config.history_every or 0) if config.history else 0
        test_rows = self.history_test_rows()
        best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
        # trainer.selection: best = early stopping on the validation loss, the best epoch's weights kept (the
        # authors' and every run before the choice existed); last = a fixed budget of max_epochs, the last kept.
        select_best = str(config.get("selection", "best")) == "best"
        sums = counts = None
        samples, train_seconds, epoch, validation_losses = 0, 0.0, 0, []
        with self.progress_bar(len(train) // batch_size * int(config.max_epochs)) as bar:
            for epoch in range(1, int(config.max_epochs) + 1):
                self.model.train()
                started = time.perf_counter()
                permutation = torch.randperm(len(train), generator=self.order).to(self.device)
                for start in range(0, len(train), batch_size):
                    index = permutation[start:start + batch_size]
                    if len(index) < 2 * world:  # BatchNorm needs two rows per rank
                        continue
                    batch = train.rows(index[rank::world])
                    loss, elementwise = self.train_step(batch, epoch)
                    samples += len(index)
                    if history_every:
                        batch_sums, batch_counts = self.cell_sums(elementwise, batch)
                        sums = batch_sums if sums is None else sums + batch_sums
                        counts = batch_counts if counts is None else counts + batch_counts
                        if self.step % history_every == 0:
                            paused = time.perf_counter()
                            self.record_history(epoch, sums, counts, test_rows)
                            started += time.perf_counter() - paused  # scoring test rows is not training time
                            sums = counts = None
                    if bar is not None and self.step % 10 == 0:
                        elapsed = train_seconds + time.perf_counter() - started
                        bar.update(completed=self.step, description=f"epoch {epoch} loss {float(loss):.4f} "
                                   f"{samples / max(elapsed, 1e-9):,.0f} samples/s")
                train_seconds += time.perf_counter() - started
                with self.averaged_weights():
                    validation_loss = self.loss_on(self.splits["validation"])
                    validation_losses.append(validation_loss)
                    if after_epoch is not None:
                        after_epoch(epoch, validation_loss)
                    if not select_best:
                        best_epoch = epoch
                    elif validation_loss < best_loss - float(config.min_delta):
                        best_loss, best_epoch, stale = validation_loss, epoch, 0
                        best_state = self.state()
                    else:
                        stale += 1
                        if stale >= int(config.patience):
                            break
        if best_state is not None:
            self.model.load_state_dict(best_state["model"])
            self.weighting.load_state_dict(best_state["weighting"])
        elif self.averaged is not None:  # selection=last: keep the averaged weights
            self.flat_parameters.values.detach().copy_(self.averaged)
        if int(config.get("precise_bn_batches") or 0):
            started = time.perf_counter()
            self.recompute_batch_norm(int(config.precise_bn_batches))
            train_seconds += time.perf_counter() - started
        return FitResult(best_epoch, epoch, train_seconds, samples, validation_losses, self.history)

    def state(self) -> dict:
        """Copies of the model's and the weighting's state: the best epoch's, restored at the end of fit."""
        return {part: {k: v.detach().clone() for k, v in module.state_dict().items()}
                for part, module in (("model", self.model), ("weighting", self.weighting))}

    def record_history(self, epoch: int, sums: torch.Tensor, counts: torch.Tensor, test_rows: Split) -> None:
        sums, counts = self.context.sum(sums), self.context.sum(counts)
        self.history.extend(self.history_rows(epoch, "train", sums, counts))
        self.history.extend(self.test_history(epoch, test_rows))

    def history_test_rows(self) -> Split:
        """The test rows scored at each history point: a fixed seeded subset when history_test_rows is set."""
        test, limit = self.splits["test"], self.config.history_test_rows
        if limit is None or int(limit) >= len(test):
            return test
        chosen = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:int(limit)]
        return test.rows(chosen.sort().values.to(self.device))

    def progress_bar(self, total: int):
        if not self.show_progress:
            return contextlib.nullcontext()
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed}"),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        return _ProgressHandle(progress, total)


def build_trainer(cfg: DictConfig, dataset: Dataset, device: torch.device | str = "cpu",
                  context: Context = Context(), show_progress: bool = False) -> Trainer:
    """The Trainer of one run: model (seeded by cfg.seed), splits, loss weighting and optimizer, from the config.

    The one place that wires them, for `train()`, the tests and the benchmarks alike."""
    device = torch.device(device)
    torch.manual_seed(int(cfg.seed))  # model initialisation; data order has its own generator
    model = build_model(cfg, dataset.schema).to(device)  # checks the task grid against the dataset
    use_fused_kernels(model, str(cfg.trainer.kernels) == "fused")  # resolved by engine/placement.py in train()
    splits = prepare_splits(dataset, model.behaviours, device, model.cell_facets)
    weighting = build_weighting(cfg, model.cells, model.behaviours, model.kinds).to(device)
    runnable = torch.compile(model) if cfg.trainer.compile else model
    return Trainer(runnable, splits, cfg.trainer, weighting, int(cfg.seed), context, show_progress=show_progress,
                   base_model=model)


class _ProgressHandle:
    """A rich progress bar with one task, usable as a context manager that yields itself."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total = progress, total

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("training", total=max(self.total, 1))
        return self

    def update(self, **values) -> None:
        self.progress.update(self.task, **values)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


def inject_nan(elementwise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Testing knob (trainer.nan_at_step): NaN in the first active term, as a diverging task would give."""
    poisoned = elementwise.clone()
    row, column = (int(i) for i in mask.nonzero()[0])
    poisoned[row, column] = float("nan")
    return poisoned


class FlatParameters:
    """The modules' trainable parameters (the model's, then the loss weighting's) as views into one flat tensor,
    their gradients as views into another.

    The optimizer then steps one tensor: one fused kernel pass instead of one per parameter tensor (MFH has
    55). Adam, AdamW and SGD are elementwise, so every value is updated as when each tensor is stepped apart, up
    to float rounding where the kernel's vector blocks fall differently (every parameter of the zoo gets a
    gradient at every step, so none is skipped there either).
    """

    def __init__(self, *modules: torch.nn.Module):
        parameters = [parameter for module in modules for parameter in module.parameters() if parameter.requires_grad]
        sizes = [parameter.numel() for parameter in parameters]
        self.values = torch.nn.Parameter(torch.cat([parameter.detach().reshape(-1) for parameter in parameters]))
        self.gradient = torch.zeros_like(self.values)
        for parameter, values, gradient in zip(parameters, self.values.detach().split(sizes),
                                               self.gradient.split(sizes)):
            parameter.data = values.view_as(parameter)
            parameter.grad = gradient.view_as(parameter)  # backward accumulates into it in place

    def zero_grad(self) -> None:
        """Zero every gradient for the next backward; the optimizer reads them as `values.grad`."""
        self.gradient.zero_()
        self.values.grad = self.gradient  # (again: a multi-process gradient sum replaces values.grad)


class FlatOptimizer:
    """Adam, AdamW or SGD (torch's defaults otherwise) stepping the one flat parameter tensor with torch's fused
    kernels: the functions `torch.optim.Adam/AdamW/SGD.step` call (`torch.optim.adam.adam`, `torch.optim.sgd.sgd`),
    so the update is theirs bit for bit (tests/engine/test_loop.py), without `Optimizer.step`'s wrapper, whose
    first call imports torch._dynamo: about 1.5 s of CPU at the start of every run process, a tenth of a smoke run.
    One pass of one kernel over the flat tensor (~5% of an mfh paper step saved on 2 cores against one per tensor).
    """

    BETAS, EPSILON = (0.9, 0.999), 1e-8

    def __init__(self, values: torch.nn.Parameter, kind: str, lr: float, weight_decay: float):
        if kind not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer {kind!r}: not adam, adamw or sgd")
        self.values, self.kind, self.lr, self.weight_decay = values, kind, lr, weight_decay
        if kind != "sgd":  # Adam's state, as torch.optim.Adam initialises it for its fused kernel
            self.steps = torch.zeros((), dtype=torch.float32, device=values.device)
            self.exp_avg = torch.zeros_like(values, memory_format=torch.preserve_format)
            self.exp_avg_sq = torch.zeros_like(values, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self) -> None:
        """One update of `values` from `values.grad`."""
        if self.kind == "sgd":
            sgd([self.values], [self.values.grad], [None], fused=True, weight_decay=self.weight_decay, momentum=0.0,
                lr=self.lr, dampening=0.0, nesterov=False, maximize=False)
            return
        adam([self.values], [self.values.grad], [self.exp_avg], [self.exp_avg_sq], [], [self.steps], fused=True,
             decoupled_weight_decay=self.kind == "adamw", amsgrad=False, beta1=self.BETAS[0], beta2=self.BETAS[1],
             lr=self.lr, weight_decay=self.weight_decay, eps=self.EPSILON, maximize=False)


def make_optimizer(values: torch.nn.Parameter, trainer: DictConfig) -> FlatOptimizer:
    """Adam (default), AdamW or SGD over the flat trainable parameters, from the trainer config."""
    return FlatOptimizer(values, str(trainer.optimizer), lr=float(trainer.lr),
                         weight_decay=float(trainer.weight_decay))
