"""What a run shows while it trains: a live status line on a terminal, plain lines otherwise, nothing with -q.

On a terminal the last line is rewritten in place (at most a few times a second): `unit i/N` with the elapsed time
and an estimate of what is left, the seed, arm and stage, the epoch and batch within the stage, and short phases
(evaluation, export).  Messages (`log`) print above it.  When stdout is not a terminal (CI, a log file) each unit
and stage start is one plain line, so logs stay readable; `quiet` prints nothing but what the caller prints itself.
"""

from __future__ import annotations

import sys
import time

import keras

REDRAW_S = 0.2  # the status line is redrawn at most this often


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The run's progress display; `live=None` means: live when `stream` is a terminal."""

    def __init__(self, stream=None, *, live: bool | None = None, quiet: bool = False):
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self.live = (not quiet) and (self.stream.isatty() if live is None else live)
        self.total = self.done = 0
        self.started = time.perf_counter()
        self.unit_text = self.detail = ""
        self._shown = 0.0
        self._width = 0

    # -- what the run reports ---------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """A message line (a finished unit, a warning): above the status line, or alone."""
        if self.quiet:
            return
        self._clear()
        print(text, file=self.stream, flush=True)
        self._draw(force=True)

    def add_units(self, count: int) -> None:
        """`count` more units to run (each seed x arm, and each shared pre-training)."""
        self.total += count

    def unit(self, seed: int, arm: str, stage: str) -> None:
        """A unit starts: `stage` is pretrain (a shared pre-training) or finetune (an arm)."""
        self.unit_text = f"seed {seed} | {arm} | {stage}"
        self.detail = ""
        if not self.live and not self.quiet:
            print(f"[unit {self.done + 1}/{self.total}] {self.unit_text}: started", file=self.stream, flush=True)
        self._draw(force=True)

    def unit_done(self) -> None:
        self.done += 1

    def stage(self, name: str) -> None:
        self.detail = name
        self._draw(force=True)

    def step(self, stage: str, epoch: int, epochs: int, batch: int, batches: int) -> None:
        self.detail = f"{stage} epoch {epoch + 1}/{epochs} batch {batch + 1}/{batches}"
        self._draw()

    def phase(self, name: str) -> None:
        """A short phase that takes seconds (evaluation, export)."""
        self.detail = name
        self._draw(force=True)

    def close(self) -> None:
        self._clear()

    # -- the status line ------------------------------------------------------------------------------------
    def status(self) -> str:
        elapsed = time.perf_counter() - self.started
        eta = f", about {_clock(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
        return (f"unit {min(self.done + 1, self.total)}/{self.total} [{_clock(elapsed)} elapsed{eta}] "
                f"{self.unit_text}" + (f": {self.detail}" if self.detail else ""))

    def _draw(self, force: bool = False) -> None:
        if not self.live or not self.total:
            return
        now = time.perf_counter()
        if not force and now - self._shown < REDRAW_S:
            return
        self._shown = now
        text = self.status()
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)

    def _clear(self) -> None:
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class ProgressCallback(keras.callbacks.Callback):
    """Reports a stage's epoch and batch to a `Progress`; evaluation once the stage's training ends."""

    def __init__(self, progress: Progress, stage: str):
        super().__init__()
        self.progress, self.stage_name = progress, stage
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.progress.stage(self.stage_name)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.progress.step(self.stage_name, self._epoch, self.params.get("epochs") or 0, batch,
                           self.params.get("steps") or 0)

    def on_train_end(self, logs=None):
        self.progress.phase(f"{self.stage_name} done, evaluating")
