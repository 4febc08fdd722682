"""The progress display and the terminal result table, rendered the way a terminal would show them (no training)."""

import io
import json
import re
import sys

import pytest
from rich.console import Console

from kpretrain.cli import main
from kpretrain.experiment import progress as progress_module
from kpretrain.experiment.progress import Progress
from kpretrain.report.combine import combined_rows, render_rows
from kpretrain.report.terminal import print_tables

CODE = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


def screen(text: str) -> list[str]:
    """The lines a terminal shows after `text`: carriage return, newline, cursor up, erase line; colours and cursor
    visibility ignored.  Lines are not wrapped, so a line drawn too wide stays too wide."""
    lines, row, col, pos = [[]], 0, 0, 0
    while pos < len(text):
        code = CODE.match(text, pos)
        if code:
            arg, command = code.groups()
            if command == "A":
                row = max(0, row - int(arg or 1))
            elif command == "K":
                lines[row] = [] if arg == "2" else lines[row][:col]
            pos = code.end()
            continue
        char, pos = text[pos], pos + 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            lines += [[]] * (row == len(lines))
        else:
            line = lines[row] = lines[row] + [" "] * (col - len(lines[row]))
            line[col:col + 1] = [char]
            col += 1
    shown = ["".join(line).rstrip() for line in lines]
    while shown and not shown[-1]:
        shown.pop()
    return shown


class Tty:
    """One terminal: stdout and stderr write to it in the order they come; stderr is also kept on its own."""

    def __init__(self):
        self.written, self.errors = [], []
        self.out, self.err = self.Stream(self, False), self.Stream(self, True)

    class Stream(io.StringIO):
        def __init__(self, tty, error):
            super().__init__()
            self.tty, self.error = tty, error

        def write(self, text):
            self.tty.written.append(text)
            if self.error:
                self.tty.errors.append(text)
            return len(text)

        def isatty(self):
            return True

    def lines(self):
        return screen("".join(self.written))


LONG_ARM = "overlay_with_a_rather_long_name, rotation_with_another_long_name, jigsaw_too"


def _fake_run(progress, tty, during=lambda: None):
    """Two units of a few batches, messages, a warning; returns what the screen shows mid-run."""
    progress.log("device: CPU")
    progress.add_units(3)
    progress.unit(0, LONG_ARM, "pretrain")
    progress.stage("pretrain")
    for epoch in range(2):
        for batch in range(5):
            progress.step("pretrain", epoch, 2, batch, 5)
    mid_run = tty.lines()
    progress.log("seed 0 | pretrain: done")
    progress.unit_done()
    progress.warn("seed 0 | overlay: stale batch-norm statistics")
    during()
    progress.unit(0, "overlay", "finetune")
    progress.step("finetune", 0, 1, 2, 3)
    progress.phase("finetune done, evaluating")
    progress.log("time: 3s wall")
    progress.close()
    progress.log("a message after close")
    tty.out.write("results: runs/x/report.md\n")
    return mid_run


@pytest.mark.parametrize("width", [80, 60])
def test_live_display_fits_the_terminal_and_leaves_only_the_messages(width, monkeypatch):
    monkeypatch.setattr(progress_module, "REDRAW_S", 0.0)  # every batch redrawn
    tty = Tty()
    progress = Progress(console=Console(file=tty.out, width=width, force_terminal=True), errors=tty.err)
    assert progress.live
    mid_run = _fake_run(progress, tty)
    # mid-run: the messages, then the three-line display cut to the width
    assert mid_run[0] == "device: CPU" and len(mid_run) == 4
    assert re.match(r"unit 1/3 .*0:00:00 elapsed$", mid_run[1])
    assert mid_run[2].startswith("seed 0 | overlay_with") and mid_run[2].endswith("…")
    assert re.match(r"pretrain epoch 2/2 .*batch 5/5$", mid_run[3])
    shown = tty.lines()
    assert all(len(line) <= width for line in shown)
    # closed: nothing of the display is left, the messages are intact and in order, the last line is the caller's
    assert shown == ["device: CPU", "seed 0 | pretrain: done", "warning: seed 0 | overlay: stale batch-norm statistics",
                     "time: 3s wall", "a message after close", "results: runs/x/report.md"]
    assert screen("".join(tty.errors)) == ["warning: seed 0 | overlay: stale batch-norm statistics"]


def test_on_stdout_print_and_stderr_lines_during_the_display_appear_above_it(monkeypatch):
    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty.out)
    monkeypatch.setattr(sys, "stderr", tty.err)
    monkeypatch.setenv("COLUMNS", "80")
    progress = Progress()  # the default: live, as stdout is a terminal

    def stray():
        print("a print")
        sys.stderr.write("a library's warning, ")
        sys.stderr.write("in two writes\n")

    _fake_run(progress, tty, stray)
    assert sys.stdout is tty.out and sys.stderr is tty.err  # restored by close
    assert tty.lines() == ["device: CPU", "seed 0 | pretrain: done",
                           "warning: seed 0 | overlay: stale batch-norm statistics", "a print",
                           "a library's warning, in two writes", "time: 3s wall", "a message after close",
                           "results: runs/x/report.md"]
    assert screen("".join(tty.errors)) == ["warning: seed 0 | overlay: stale batch-norm statistics",
                                           "a library's warning, in two writes"]


def test_piped_plain_lines_and_quiet_only_warnings():
    out, err = io.StringIO(), io.StringIO()
    progress = Progress(out, errors=err)
    assert not progress.live
    _fake_run(progress, Tty())
    assert out.getvalue().splitlines() == [
        "device: CPU", f"[unit 1/3] seed 0 | {LONG_ARM} | pretrain: started", "seed 0 | pretrain: done",
        "[unit 2/3] seed 0 | overlay | finetune: started", "time: 3s wall", "a message after close"]
    assert err.getvalue() == "warning: seed 0 | overlay: stale batch-norm statistics\n"
    assert not re.search(r"[\r\x1b]", out.getvalue() + err.getvalue())
    out, err = io.StringIO(), io.StringIO()
    _fake_run(Progress(out, quiet=True, errors=err), Tty())
    assert out.getvalue() == ""
    assert err.getvalue() == "warning: seed 0 | overlay: stale batch-norm statistics\n"


def _run_dir(directory, recipe: str, arms: dict, reference: str | None = None, smoke: bool = False) -> str:
    """A run directory holding only a metrics.json with these arms' test accuracies per seed."""
    entry = {"trainable_params": 10, "protocol": {"task": "overlay", "frozen_depth": 1}}
    metrics = {"recipe": recipe, "smoke": smoke, "arms": {
        name: {**entry, "seeds": list(range(len(acc))), "test_accuracy": acc, "test_accuracy_raw": acc,
               **({"baseline": "scratch"} if name != "scratch" else {}),
               **({"reference": "natural"} if name == reference else {})} for name, acc in arms.items()}}
    directory.mkdir()
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return str(directory)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [_run_dir(root / "a_run_directory_with_a_long_name", "ra", {"scratch": [0.70, 0.71, 0.72],
                                                                       "overlay": [0.72, 0.74, 0.73]}, smoke=True),
            _run_dir(root / "b", "rb", {"scratch": [0.60, 0.62, 0.61, 0.6], "natural": [0.7, 0.71, 0.7, 0.72],
                                        "rotation_with_a_long_name": [0.65, 0.64, 0.66, 0.63]}, reference="natural")]


@pytest.mark.parametrize("width", [80, 60])
def test_terminal_table_fits_and_shows_the_markdown_numbers(runs, width):
    out = io.StringIO()
    print_tables(combined_rows(runs), console=Console(file=out, width=width, force_terminal=True))
    shown = screen(out.getvalue())
    assert shown and all(len(line) <= width for line in shown)
    text = " ".join(shown)
    assert f"{runs[0]}: ra (smoke)".replace(" ", "") in text.replace(" ", "")  # the title may wrap
    markdown = render_rows(combined_rows(runs), "md")
    for number in ("70.75", "0.96", "69.23", "72.27", "+10.00", "+7.75", "+12.25", "0.00077", "0.0015", "+3.75"):
        assert number in markdown and number in text, number  # the same numbers, none lost to wrapping


def test_report_prints_the_table_on_a_terminal_and_markdown_otherwise(runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["report", *runs]) == 0  # piped (captured): Markdown, as scripts parse it
    assert capsys.readouterr().out == render_rows(combined_rows(runs), "md")
    monkeypatch.setattr("kpretrain.report.terminal.is_terminal", lambda stream=None: True)
    assert main(["report", *runs, "--format", "md"]) == 0  # asked for: Markdown even on a terminal
    assert capsys.readouterr().out == render_rows(combined_rows(runs), "md")
    assert main(["report", *runs]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("|") for line in shown) and all(len(line) <= 80 for line in shown)
    assert any("Holm 0.0015" in line for line in shown)
