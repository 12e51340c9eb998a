"""The training loop every gen4d run uses (4D construction, STAG4D, video-model training).

A :class:`Task` supplies what differs - its model, batch, losses and step; the engine owns the
loop: progress and log lines, timing, checkpoints by steps and by wall time (with the RNG states),
the NaN policy and Ctrl-C.

Hot path: per step the engine only adds the step's device loss tensors to running sums. It reads
them back (one host sync) at logging steps, where a non-finite loss stops the run; parameters are
checked before every checkpoint, so a checkpoint is always a good one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from gen4d.errors import NonFiniteLossError, RunInterrupted
from gen4d.run.checkpoint import find_checkpoint, load_tree, rng_state, save_tree, set_rng_state, write_checkpoint
from gen4d.run.logs import FILE_ONLY, LOGGER

__all__ = ["Engine", "LoopResult", "LoopSettings", "Task", "read_training_state"]

STATE = "training_state"
"""Base name of the training state in a checkpoint folder (``.safetensors`` + ``.json``)."""


class Task(Protocol):
    """What a kind of run supplies to the :class:`Engine`."""

    title: str
    """Shown in the progress bar and in messages, e.g. '4D construction'."""
    nan_hint: str
    """What to do after a non-finite loss, e.g. 'Lower the learning rates (--lr.*) or check the data'."""
    resume_how: str
    """How the user continues a run, e.g. '--resume'."""

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step (0-based global index): device scalars, at least ``loss``; never
        read them back here."""

    def describe(self, step: int, means: dict[str, float]) -> dict[str, Any]:
        """Fields of the log line / progress bar after ``step`` steps from the mean logged values."""

    def must_checkpoint(self, step: int) -> bool:
        """Extra checkpoint points after ``step`` steps (e.g. stage ends)."""

    def evaluate_due(self, step: int) -> bool:
        """Whether :meth:`evaluate` runs after ``step`` steps (its time is not training time)."""

    def evaluate(self, step: int, train_time: float) -> None: ...

    def parameters(self) -> Iterable[torch.Tensor]:
        """Tensors that must stay finite (checked before each checkpoint)."""

    def state(self) -> dict[str, Any]:
        """Training state to resume from (a tree of tensors and JSON values)."""

    def load_state(self, state: dict[str, Any]) -> None: ...

    def write_checkpoint(self, folder: Path) -> None:
        """Write the model files that eval / view / export read (e.g. model.safetensors + model.json)."""

    def checkpoint_info(self, step: int) -> dict[str, Any]: ...

    def record(self, step: int, means: dict[str, float], steps: int, train_time: float) -> None:
        """Called at every logging step with the mean values over the ``steps`` since the last one
        (a task that subclasses :class:`Task` inherits: nothing, log.txt is the record)."""

    def should_stop(self, step: int) -> bool:
        """Checked at logging steps: stop (after a checkpoint) now, e.g. at a time budget. In a
        multi-process run every process must give the same answer (decide it collectively).
        A task that subclasses :class:`Task` inherits: never."""
        return False


@dataclass(frozen=True)
class LoopSettings:
    total_steps: int
    log_every: int = 50
    checkpoint_every: int = 0
    """Checkpoint every this many steps (0: only where the task asks and at the end)."""
    checkpoint_seconds: float = 120.0
    """Also checkpoint when this many seconds of training passed since the last one (< 0: never)."""
    keep: int = 1
    """Newest checkpoints kept."""
    stop_after: int | None = None
    """Stop (after a checkpoint) once this many steps are done."""
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    """torch Generators whose states the checkpoints carry."""


@dataclass
class LoopResult:
    step: int
    train_time: float
    stopped_early: bool


def read_training_state(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """(checkpoint folder, training state) of a run's latest checkpoint, or None without one."""
    folder = find_checkpoint(run_dir, required=f"{STATE}.json")
    if folder is None:
        return None
    return folder, load_tree(folder, STATE, device=device)


class Engine:
    """Runs a :class:`Task` from ``start_step`` to ``settings.total_steps`` in ``run_dir``.

    Several processes (data parallel): each runs the engine; ``barrier`` synchronises them around a
    checkpoint, which only the main process (``is_main``) writes. Their checkpoint and logging steps
    must agree, so wall-time checkpoints (decided per process) must be off there.
    """

    def __init__(
        self,
        run_dir: str | Path,
        settings: LoopSettings,
        device: torch.device,
        progress: bool = True,
        is_main: bool = True,
        barrier: Callable[[], None] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.device = device
        self.progress = progress and is_main
        self.is_main = is_main
        self.barrier = barrier or (lambda: None)

    # -- state ------------------------------------------------------------------------------------------
    def restore(self, task: Task, state: dict[str, Any]) -> tuple[int, float]:
        """Load a checkpoint's training state into ``task`` and the RNGs; -> (step, train time)."""
        task.load_state(state["task"])
        set_rng_state(state["rng"], self.device, self.settings.generators)
        return int(state["step"]), float(state.get("train_time_s", 0.0))

    def _save(self, task: Task, step: int, train_time: float) -> None:
        state = {
            "step": step,
            "train_time_s": train_time,
            "rng": rng_state(self.device, self.settings.generators),
            "task": task.state(),
        }

        def write(folder: Path) -> None:
            task.write_checkpoint(folder)
            save_tree(folder, STATE, state)

        self.barrier()
        if self.is_main:
            write_checkpoint(self.run_dir, write, {"step": step, **task.checkpoint_info(step)}, keep=self.settings.keep)
        self.barrier()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self, task: Task, start_step: int = 0, train_time: float = 0.0) -> LoopResult:
        s = self.settings
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=s.total_steps, initial=start_step, desc=task.title, dynamic_ncols=True)
        step = start_step
        sums: dict[str, torch.Tensor] = {}
        since_log = 0
        last_good = start_step if start_step else None
        segment_start = last_save = time.perf_counter()
        stopped_early = False
        try:
            while step < s.total_steps:
                try:
                    values = task.step(step)
                except (KeyboardInterrupt, NonFiniteLossError):
                    raise
                except Exception as err:
                    # A failure inside a step after a non-finite loss is that loss's consequence.
                    if self._non_finite(sums, task):
                        raise NonFiniteLossError(
                            f"non-finite loss or parameters before step {step + 1} ({err})"
                        ) from err
                    raise
                for key, value in values.items():
                    sums[key] = sums[key] + value if key in sums else value
                since_log += 1
                step += 1
                stopping = s.stop_after is not None and step >= s.stop_after
                do_eval = task.evaluate_due(step)
                do_ckpt = (
                    step == s.total_steps
                    or stopping
                    or task.must_checkpoint(step)
                    or (s.checkpoint_every > 0 and step % s.checkpoint_every == 0)
                    or (s.checkpoint_seconds >= 0 and time.perf_counter() - last_save >= s.checkpoint_seconds)
                )
                if step % s.log_every == 0 or do_ckpt or do_eval:
                    means = self._read_means(sums, since_log, step)  # the one host sync
                    fields = task.describe(step, means)
                    if bar is not None:
                        bar.set_postfix(**{k: v for k, v in fields.items() if k != "step"})
                        bar.update(step - bar.n)
                    LOGGER.info("step %d %s", step, " ".join(f"{k} {v}" for k, v in fields.items()), extra=FILE_ONLY)
                    task.record(step, means, since_log, train_time + time.perf_counter() - segment_start)
                    sums, since_log = {}, 0
                    if not stopping and step < s.total_steps and task.should_stop(step):
                        stopping = do_ckpt = True
                if do_eval:
                    self._sync()
                    train_time += time.perf_counter() - segment_start
                    task.evaluate(step, train_time)
                    segment_start = time.perf_counter()
                if do_ckpt:
                    if not all(bool(torch.isfinite(p).all()) for p in task.parameters()):
                        raise NonFiniteLossError(f"parameters became non-finite before step {step}")
                    self._sync()
                    train_time += time.perf_counter() - segment_start
                    self._save(task, step, train_time)
                    last_good = step
                    segment_start = last_save = time.perf_counter()
                if stopping and step < s.total_steps:
                    stopped_early = True
                    break
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            how = getattr(task, "resume_how", "--resume")
            if last_good:
                message = f"interrupted at step {step}; {how} continues from step {last_good}"
            else:
                message = f"interrupted at step {step}; nothing was saved yet (no checkpoint), {how} starts again"
            LOGGER.info(message)
            raise RunInterrupted(message) from None
        except NonFiniteLossError as err:
            if bar is not None:
                bar.close()
            where = self.run_dir / "checkpoint"
            kept = (
                f"the last good checkpoint (step {last_good}) is kept in {where}"
                if last_good
                else "no checkpoint was written yet"
            )
            hint = getattr(task, "nan_hint", "Lower the learning rates (--lr.*) or check the data")
            how = getattr(task, "resume_how", "--resume")
            message = f"{task.title} stopped: non-finite loss ({err}); {kept}. {hint}, then rerun ({how} continues from the checkpoint)."
            LOGGER.info(message)
            raise NonFiniteLossError(message) from err
        if bar is not None:
            bar.close()
        return LoopResult(step, train_time, stopped_early)

    @staticmethod
    def _read_means(sums: dict[str, torch.Tensor], count: int, step: int) -> dict[str, float]:
        if not sums:
            return {}
        keys = list(sums)
        values = torch.stack([torch.as_tensor(sums[k]).detach().float().reshape(()) for k in keys]).cpu().tolist()
        means = {k: v / count for k, v in zip(keys, values)}
        if not math.isfinite(means.get("loss", 0.0)):
            raise NonFiniteLossError(f"the loss became {means['loss']} between steps {step - count} and {step}")
        return means

    @staticmethod
    def _non_finite(sums: dict[str, torch.Tensor], task: Task) -> bool:
        if "loss" in sums and not bool(torch.isfinite(sums["loss"]).all()):
            return True
        return not all(bool(torch.isfinite(p).all()) for p in task.parameters())
