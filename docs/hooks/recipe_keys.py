"""MkDocs hook: the tables of docs/guide/recipe-keys.md, generated from the recipe schema at build time.

Each `<!-- recipe-keys: SECTION -->` line of that page becomes a table of the section's keys with their default,
allowed values and meaning, read from `kpretrain.recipe.schema` (the fields' `_spec` metadata), so the page cannot
drift from the code.  `NOTES` adds a meaning where the schema's `doc` is empty, or a link.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing

PAGE = "guide/recipe-keys.md"
SHARED = ("optimizer", "averaging", "select")  # listed once as <stage>.X for pretrain and finetune
NOTES = {
    "name": "the recipe's name (default: the file's name): `runs/<name>/`, `tuner_runs/<name>/`, the report's title",
    "selftrain": "([Self-training](self-training.md))",
    "baselines": "a matched scratch for an arm with its own backbone or fine-tuning settings is named `scratch-<arm>` "
                 "([Matched baselines](recipes.md#matched-baselines), "
                 "[Compute-matched scratch](recipes.md#compute-matched-scratch))",
    "arms": "(`backbone`, `pretrain`, `transfer`, `finetune`, `selftrain`, `baseline`, `reference`), nested or "
            "dotted ([Recipes](recipes.md))",
    "reference": "([% of benefit](recipes.md#of-benefit))",
    "sweep": "([Sweeps](recipes.md#sweeps))",
    "data.batch_size": "batch size of every stage",
    "pretrain.task": "the pretext task ([Pretext tasks](pretext-tasks.md)); `supervised`: natural pre-training on "
                     "`pretrain.dataset`; `shapes`, `fractal`: [synthetic](synthetic.md); `none`: no pre-training",
    "transfer.head_init": "warm-start the linear head with a logistic regression on frozen features",
    "finetune.epochs": "fine-tuning epochs (with `--tuner hyperband`: the maximum budget)",
    "finetune.head": "the downstream head",
    "optimizer.name": "the optimizer",
    "optimizer.schedule": "learning-rate schedule over the stage",
    "optimizer.warmup_epochs": "linear warm-up before the schedule",
    "optimizer.weight_decay": "weight decay",
    "runtime.mixed_precision": "Keras `mixed_float16` policy",
    "runtime.jit_compile": "XLA; op determinism is then off unless `deterministic: true` (which is exit 2 with it)",
    "runtime.distribute": "`tf.distribute` strategy ([Devices and distributed runs](distributed.md))",
    "runtime.threads": "TensorFlow's intra-op threads in every process (null: every core); changes the last bits "
                       "of CPU results ([GPUs and CPU threads](distributed.md#units-on-dask-workers))",
    "runtime.executor": "where units train: here, or on Dask workers (`--workers`, `--address`), same numbers "
                        "([Units on Dask workers](distributed.md#units-on-dask-workers))",
    "tune.max_trials": "trials of the search (`--max-trials`)",
}


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return ""
    return "`" + json.dumps(value).replace('"', "") + "`"


def _allowed(meta: dict) -> str:
    parts = [" \\| ".join(f"`{c}`" for c in meta.get("choices") or ())]
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None or high is not None:
        parts.append(f"{'' if low is None else low}..{'' if high is None else high}")
    return " ".join(p for p in parts if p)


def rows(cls, prefix: str = ""):
    """(section, key as shown, default, allowed, meaning) of every key of `cls`, depth first."""
    from kpretrain.recipe import schema

    hints = typing.get_type_hints(cls, vars(schema))
    for f in dataclasses.fields(cls):
        key = prefix + f.name.rstrip("_")
        parts = key.split(".")
        shown = ".".join(parts[1:]) if len(parts) > 2 and parts[0] in ("pretrain", "finetune") and parts[1] in SHARED else key
        section = f"<stage>.{parts[1]}" if shown != key else (parts[0] if len(parts) > 1 else "top")
        subs = [a for a in typing.get_args(hints[f.name]) or (hints[f.name],) if dataclasses.is_dataclass(a)]
        meaning = " ".join(x for x in (f.metadata.get("doc", ""), NOTES.get(shown, "")) if x).replace("|", "\\|")
        meaning = "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;")  # `<seed>`: text, not a tag
                           for i, p in enumerate(meaning.split("`")))
        if not subs or typing.get_args(hints[f.name]):  # a leaf, or an optional section (null by default)
            yield section, shown, _default(f) or ("`null`" if subs else ""), _allowed(f.metadata), meaning
        for sub in subs:
            yield from rows(sub, key + ".")


def table(section: str) -> str:
    seen, lines = set(), ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    from kpretrain.recipe.schema import Recipe

    for sec, shown, default, allowed, meaning in rows(Recipe):
        if sec == section and shown not in seen:
            seen.add(shown)
            lines.append(f"| `{shown}` | {default} | {allowed} | {meaning} |")
    if len(lines) == 2:
        raise ValueError(f"{PAGE}: no recipe keys in section {section!r}")
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    return re.sub(r"(?m)^<!-- recipe-keys: (\S+) -->$", lambda m: table(m.group(1)), markdown)
