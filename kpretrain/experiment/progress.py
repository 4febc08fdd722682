"""What a run shows while it trains: one live display on a terminal, plain lines otherwise, nothing with -q.

On a terminal (or in a Jupyter notebook with ipywidgets) a rich live display, redrawn at most a few times a second
and cut to the terminal's width, shows three lines: the units done of all with the elapsed time and an estimate of
what is left; the current unit (seed | arm | stage); the current stage's epoch and batch, or a short phase
(evaluation, export).  Messages (`log`) print above it; warnings (`warn`) go to stderr, also above it; `close` erases
it.  When stdout is not a terminal (CI, a log file) each unit start is one plain line, so logs stay readable;
`quiet` prints nothing but warnings.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import keras
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from kpretrain.report.terminal import is_terminal

REDRAW_S = 0.2  # the live display is redrawn at most this often while batches run


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _bar_line(label: str, completed: float, total: float, right: str) -> Table:
    """`label ━━━━╸──── right` at the console's width (the bar shrinks first, then the texts are cut)."""
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_column(ratio=1, min_width=4)
    grid.add_column(no_wrap=True, overflow="ellipsis", justify="right")
    grid.add_row(Text(label), ProgressBar(total=max(total, 1), completed=completed), Text(right))
    return grid


def _notebook_widgets(console: Console) -> bool:
    """In a Jupyter notebook rich draws live displays with ipywidgets; without them it cannot."""
    return console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None


class Progress:
    """The run's progress display (see the module's docstring).

    Args:
        stream: where information goes (default: sys.stdout).
        live: draw the live display; None: when `stream` is a terminal (or a Jupyter notebook's output).
        quiet: print nothing but warnings.
        console: a rich `Console` to draw on instead of one on `stream` (its file is then the stream).
        errors: where warnings go (default: sys.stderr).

    Example:
        >>> progress = Progress()
        >>> progress.add_units(2)
        >>> progress.unit(0, "scratch", "finetune")
        >>> progress.log("seed 0 | scratch: test acc 0.8123")
        >>> progress.warn("seed 0 | scratch: stale batch-norm statistics")
        >>> progress.close()
    """

    def __init__(self, stream=None, *, live: bool | None = None, quiet: bool = False, console: Console | None = None,
                 errors=None):
        self.stream = console.file if console is not None else stream if stream is not None else sys.stdout
        self.console = console if console is not None else Console(file=self.stream, highlight=False)
        if live is None:
            interactive = self.console.is_interactive if console is not None else is_terminal(self.stream)
            live = interactive or _notebook_widgets(self.console)
        self.quiet = quiet
        self.live = (not quiet) and live
        if self.live and console is None and not self.console.is_jupyter:
            self.console = Console(file=self.stream, highlight=False, force_terminal=True, force_interactive=True)
        self.errors = Console(file=errors, stderr=errors is None, highlight=False, soft_wrap=True)
        self.total = self.done = 0
        self.started = time.perf_counter()
        self.unit_text = self.detail = ""
        self._step: tuple | None = None  # (stage, epoch, epochs, batch, batches) of the latest batch
        self._shown = 0.0
        self._display: Live | None = None
        self._stderr: _AboveDisplay | None = None
        self._closed = False  # closed: nothing but a new unit draws the display again

    # -- what the run reports ---------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """A message line (a finished unit, a check's result): above the live display, or alone."""
        if self.quiet:
            return
        if not self.live:
            print(text, file=self.stream, flush=True)
            return
        self.console.print(Text(text), soft_wrap=True)
        self._draw(force=True)

    def warn(self, text: str) -> None:
        """A warning line on stderr (also with `quiet`), above the live display: `warning: text`."""
        line = Text.assemble(("warning:", "bold yellow"), " ", text)
        self._above(lambda: self.errors.print(line))

    def add_units(self, count: int) -> None:
        """`count` more units to run (each seed x arm, and each shared pre-training)."""
        self.total += count
        self._closed = False

    def unit(self, seed: int, arm: str, stage: str) -> None:
        """A unit starts: `stage` is pretrain (a shared pre-training) or finetune (an arm)."""
        self.unit_text = f"seed {seed} | {arm} | {stage}"
        self.detail, self._step, self._closed = "", None, False
        if not self.live and not self.quiet:
            print(f"[unit {self.done + 1}/{self.total}] {self.unit_text}: started", file=self.stream, flush=True)
        self._draw(force=True)

    def unit_done(self) -> None:
        self.done += 1

    def stage(self, name: str) -> None:
        """A training stage of the unit starts (pretrain, finetune)."""
        self.detail, self._step = name, None
        self._draw(force=True)

    def step(self, stage: str, epoch: int, epochs: int, batch: int, batches: int) -> None:
        """A batch of `stage` is done (`epoch` and `batch` count from 0)."""
        self.detail = f"{stage} epoch {epoch + 1}/{epochs} batch {batch + 1}/{batches}"
        self._step = (stage, epoch, epochs, batch, batches)
        self._draw()

    def phase(self, name: str) -> None:
        """A short phase that takes seconds (evaluation, export)."""
        self.detail, self._step = name, None
        self._draw(force=True)

    def close(self) -> None:
        """Erase the live display (nothing of it stays on the screen); later messages print alone."""
        self._closed = True
        if self._display is not None:
            display, self._display = self._display, None
            display.stop()
        if self._stderr is not None:
            proxy, self._stderr = self._stderr, None
            if sys.stderr is proxy:
                sys.stderr = proxy.file
            proxy.flush_rest()

    # -- the display ------------------------------------------------------------------------------------
    def _times(self) -> str:
        elapsed = time.perf_counter() - self.started
        eta = f", about {_clock(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
        return f"{_clock(elapsed)} elapsed{eta}"

    def renderable(self) -> Group:
        """The live display: units done of all, the current unit, the current stage's position (or phase)."""
        lines = [_bar_line(f"unit {min(self.done + 1, self.total)}/{self.total}", self.done, self.total,
                           self._times()),
                 Text(self.unit_text, no_wrap=True, overflow="ellipsis")]
        if self._step is not None and self._step[4]:
            stage, epoch, epochs, batch, batches = self._step
            lines.append(_bar_line(f"{stage} epoch {epoch + 1}/{epochs}", epoch * batches + batch + 1,
                                   epochs * batches, f"batch {batch + 1}/{batches}"))
        elif self.detail:
            lines.append(Text(self.detail, no_wrap=True, overflow="ellipsis"))
        return Group(*lines)

    def _draw(self, force: bool = False) -> None:
        if not self.live or not self.total or self._closed:
            return
        now = time.perf_counter()
        if not force and now - self._shown < REDRAW_S:
            return
        self._shown = now
        if self._display is None:
            self._start()
        else:
            self._display.update(self.renderable(), refresh=True)

    def _start(self) -> None:
        """Start the live display; while it runs, print() and stderr lines appear above it."""
        ours = self.stream is sys.stdout
        self._display = Live(self.renderable(), console=self.console, auto_refresh=False, transient=True,
                             redirect_stdout=ours, redirect_stderr=False)
        self._display.start(refresh=True)
        if ours and not self.console.is_jupyter and not isinstance(sys.stderr, _AboveDisplay):
            self._stderr = sys.stderr = _AboveDisplay(self, sys.stderr)

    def _above(self, write) -> None:
        """Call `write` (which writes to another stream of the same terminal) with the live display out of its way:
        collapsed to one empty line, written over, then drawn again below."""
        if self._display is None or self.console.is_jupyter:
            write()
            return
        self._display.update(Text(""), refresh=True)
        write()
        self._display.update(self.renderable(), refresh=True)


class _AboveDisplay:
    """sys.stderr while a live display runs on the terminal: each whole line is written above the display."""

    def __init__(self, progress: Progress, file):
        self.progress, self.file, self._buffer = progress, file, ""

    @property
    def rich_proxied_file(self):  # rich consoles on stderr write to the file itself
        return self.file

    def write(self, text: str) -> int:
        self._buffer += text
        whole, newline, self._buffer = self._buffer.rpartition("\n")
        if newline:
            self.progress._above(lambda: (self.file.write(whole + "\n"), self.file.flush()))
        return len(text)

    def flush_rest(self) -> None:
        if self._buffer:
            self.file.write(self._buffer)
        self.file.flush()

    def flush(self) -> None:  # a part line waits for its end (or for the display to close)
        pass

    def __getattr__(self, name: str):
        return getattr(self.file, name)


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
