"""A run directory's guards: one writer at a time (a lock file), and the recipe it was started with."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys

from kpretrain.errors import InputError

LOCK_NAME = ".lock"


class DirectoryLocked(InputError):
    """Another live process holds the directory's lock."""


class DirectoryLock:
    """`with DirectoryLock(path, what):` holds `path/.lock` or refuses with `DirectoryLocked` naming the holder.

    An exclusive `flock` on the file is the lock: the kernel drops it when its process dies, SIGKILL included, so
    no dead process can block a directory.  The file keeps the holder's pid and host (emptied on a clean exit);
    a pid left by a process that died holding the lock is reported as a stale lock taken over.

    Args:
        directory: the directory to lock (created if needed).
        what: what the directory is, for the messages, e.g. "tuner directory".
        hint: the fix the refusal suggests, e.g. "use another --dir".
    """

    def __init__(self, directory: str, what: str = "run directory", hint: str = "use another --out"):
        self.directory, self.what, self.hint = directory, what, hint
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None

    def _holder(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            return json.loads(os.read(fd, 4096) or b"{}")
        except ValueError:
            return {}

    def acquire(self) -> None:
        """Take the lock (creating the directory and its `.lock` file if needed) and write this process into it.

        Raises:
            DirectoryLocked: another live process holds the lock; the message names its pid and host.
        """
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise DirectoryLocked(f"{self.what} {self.directory!r} is in use by process {holder.get('pid', '?')}"
                                  f"{' on ' + holder['host'] if holder.get('host') else ''} (lock {self.path}); "
                                  f"wait for it to finish or {self.hint}") from None
        stale = self._holder(fd)
        if stale.get("pid"):
            print(f"warning: took over the stale lock of {self.what} {self.directory!r} "
                  f"(process {stale['pid']} ended without releasing it)", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file and drop the lock; nothing happens when this object does not hold it."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the file stays: removing it would let two processes lock two inodes
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def default_out_dir(name: str) -> str:
    """The run directory of a run started without `--out`: `runs/<recipe name>/<UTC timestamp>`.

    Args:
        name: the recipe's name.

    Returns:
        The relative path, e.g. `runs/fashion_overlay/20261127T201500Z`; nothing is created.
    """
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join("runs", name, stamp)


RUN_FILE = "run.json"  # how the run was started (--smoke), beside recipe.yaml
# keys that change how a run looks or where its units run, not what it computes
IGNORED_KEYS = ("runtime.verbose", "runtime.tensorboard", "runtime.loggers", "runtime.executor")


class RecipeMismatch(InputError):
    """The run directory was started with another recipe."""


def first_difference(here, there, *, skip_missing: bool = False, ignore=()) -> tuple[str, object, object] | None:
    """The first place where two JSON-like trees (nested dicts) differ, in the order of `here`'s keys.

    Dicts are compared key by key, any other values with `==`.  Keys only `there` has come after `here`'s own.

    Args:
        here: a tree, e.g. the recipe of this invocation.
        there: the tree to compare it with, e.g. the recipe a directory was started with.
        skip_missing: `False` (the default): a key only one side has is a difference, its missing value reported
            as `"(absent)"`.  `True`: such keys are skipped (a newer schema adds keys).
        ignore: dotted keys not compared (e.g. `IGNORED_KEYS`, which do not change what a run computes).

    Returns:
        `(dotted key, value here, value there)` of the first difference (the key is `""` when `here` and
        `there` themselves differ and are not both dicts), or None when the trees are equal.

    Example:

    >>> from kpretrain.rundir import first_difference
    >>> first_difference({"finetune": {"epochs": 3}}, {"finetune": {"epochs": 6}})
    ('finetune.epochs', 3, 6)
    >>> first_difference({"a": 1}, {"a": 1, "b": 2}), first_difference({"a": 1}, {"a": 1, "b": 2}, skip_missing=True)
    (('b', '(absent)', 2), None)
    """
    return _first_difference(here, there, "", skip_missing, tuple(ignore))


def _first_difference(here, there, key: str, skip_missing: bool, ignore: tuple):
    if isinstance(here, dict) and isinstance(there, dict):
        for k in [*here, *(k for k in there if k not in here)]:
            sub = f"{key}.{k}" if key else str(k)
            if sub in ignore or (skip_missing and (k not in here or k not in there)):
                continue
            found = _first_difference(here.get(k, _ABSENT), there.get(k, _ABSENT), sub, skip_missing, ignore)
            if found:
                return found
        return None
    return None if here == there else (key, here, there)


_ABSENT = "(absent)"


def recipe_sha256(recipe_dict: dict) -> str:
    """SHA-256 of the resolved recipe (canonical JSON), without the keys that do not change results.

    Args:
        recipe_dict: the resolved recipe as a plain dict (`Recipe.to_dict()`); it is not modified.

    Returns:
        The hex digest of its JSON with sorted keys, `IGNORED_KEYS` left out.
    """
    plain = json.loads(json.dumps(recipe_dict))
    for key in IGNORED_KEYS:
        section, _, name = key.partition(".")
        plain.get(section, {}).pop(name, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def started_with_smoke(out_dir: str) -> bool:
    """Whether the run in `out_dir` was started with `--smoke` (its `run.json`).

    Args:
        out_dir: a run directory.

    Returns:
        The `smoke` entry of `out_dir/run.json`; False when the file is missing or unreadable.
    """
    try:
        with open(os.path.join(out_dir, RUN_FILE)) as fh:
            return bool(json.load(fh).get("smoke", False))
    except (OSError, ValueError):
        return False


def run_state(out_dir: str, recipe_dict: dict, smoke: bool) -> str:
    """What `out_dir` holds for this recipe: "new", "resume" (an unfinished run of it) or "finished".

    A run is finished when its `metrics.json` says `complete`.  The recipe stored in the directory is completed
    with the defaults of keys added since (`with_defaults`) before it is compared; `IGNORED_KEYS` are not compared.

    Args:
        out_dir: the run directory (`--out`).
        recipe_dict: the resolved recipe of this invocation as a plain dict.
        smoke: whether this invocation runs with `--smoke`.

    Returns:
        "new" when `out_dir` holds no `recipe.yaml`, "finished" or "resume" when it holds a run of this recipe.

    Raises:
        RecipeMismatch: (exit 2) the directory holds another recipe's run (the message names the first key that
            differs, with both values), or one started with another `--smoke`.
    """
    recipe_path = os.path.join(out_dir, "recipe.yaml")
    if not os.path.exists(recipe_path):
        return "new"
    from kpretrain.recipe import with_defaults
    from kpretrain.recipe.values import dump_yaml, load_yaml

    with open(recipe_path) as fh:
        there = with_defaults(load_yaml(fh) or {})  # keys added since the run started: their defaults
    here = load_yaml(dump_yaml(recipe_dict))  # compare as the file stores it
    found = first_difference(here, there, ignore=IGNORED_KEYS)
    if found:
        key, value, other = found
        raise RecipeMismatch(f"--out {out_dir!r} holds a run of another recipe: key '{key}' is {other!r} there and "
                             f"{value!r} here; resume it with `kpretrain run --resume {out_dir}`, or use another --out")
    was_smoke = started_with_smoke(out_dir)
    if was_smoke != smoke:
        raise RecipeMismatch(f"--out {out_dir!r} holds a run started {'with' if was_smoke else 'without'} --smoke; "
                             f"run it {'with' if was_smoke else 'without'} --smoke, or use another --out")
    try:
        with open(os.path.join(out_dir, "metrics.json")) as fh:
            finished = bool(json.load(fh).get("complete"))
    except (OSError, ValueError):
        finished = False
    return "finished" if finished else "resume"


def start_files(out_dir: str, recipe_dict: dict, smoke: bool) -> None:
    """Write how the run starts into `out_dir`: `run.json` (`--smoke`), then `recipe.yaml`, each atomically
    (`recipe.yaml` last: it marks the directory as a run that `--resume` continues)."""
    from kpretrain import io
    from kpretrain.recipe.values import dump_yaml

    io.write_json(os.path.join(out_dir, RUN_FILE), {"smoke": smoke})
    io.write_text(os.path.join(out_dir, "recipe.yaml"), dump_yaml(recipe_dict))


@contextlib.contextmanager
def run_directory(out_dir: str, recipe_dict: dict, smoke: bool):
    """Create `out_dir` if needed (checking it is writable), hold its lock and yield its `run_state`.

    A directory this call created is removed again when bad input (`InputError`) ends the block.

    Args:
        out_dir: the run directory (`--out`).
        recipe_dict: the resolved recipe of this invocation as a plain dict.
        smoke: whether this invocation runs with `--smoke`.

    Yields:
        The run state: "new", "resume" or "finished" (see `run_state`).  A new run's `run.json` and
        `recipe.yaml` are written before it is yielded (`start_files`).

    Raises:
        InputError: `out_dir` cannot be written.
        DirectoryLocked: another process holds the directory.
        RecipeMismatch: the directory holds another recipe's run, or one started with another `--smoke`.
    """
    created = not os.path.exists(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise InputError(f"--out {out_dir!r}: cannot write there ({exc.strerror}); choose a writable directory") from None
    try:
        with DirectoryLock(out_dir):
            state = run_state(out_dir, recipe_dict, smoke)
            if state == "new":  # before anything else: a run killed from here on resumes with --resume DIR
                start_files(out_dir, recipe_dict, smoke)
            yield state
    except InputError:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
