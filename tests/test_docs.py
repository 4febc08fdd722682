"""The documentation: the README stays short and its links resolve, the MkDocs site builds with --strict (a broken
link fails it), and the reference pages name every recipe key and every command-line option the code has."""

import argparse
import dataclasses
import html
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONTRACTS = ROOT.parent / "shared" / "CONTRACTS.md"  # beside the repository in CI; its recipe-key table, if there
# The key groups of CONTRACTS.md's "Recipe keys with fixed names" table, so that a clone without it checks them too.
CONTRACT_KEYS = (
    "name seeds data.dataset data.labels_per_class data.validation data.batch_size data.path data.data_dir data.split "
    "data.image_size data.channels backbone.name backbone.from pretrain.task pretrain.options pretrain.dataset "
    "pretrain.epochs pretrain.optimizer.name pretrain.optimizer.learning_rate pretrain.optimizer.schedule "
    "pretrain.optimizer.warmup_epochs pretrain.probe pretrain.select finetune.select finetune.augment "
    "transfer.frozen_depth transfer.bn transfer.unfreeze transfer.init transfer.head_init finetune.epochs "
    "finetune.optimizer finetune.averaging pretrain.averaging selftrain reference baselines arms sweep tune.objective "
    "tune.space evaluation.bn_refresh runtime.deterministic runtime.mixed_precision runtime.jit_compile "
    "runtime.distribute runtime.tensorboard runtime.verbose").split()
SHARED_SECTIONS = ("optimizer", "averaging", "select")  # listed once for pretrain and finetune on the keys page


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of `config` into `site`, run from the config's directory (snippets read from there).
    Not `-q`: it hides warnings from --strict, which then passes."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_strictly_with_the_api_reference_and_no_web_fonts(site):
    api = (site / "reference" / "api.html").read_text()
    for name in ("api.run", "api.tune", "api.load_backbone", "api_tools.lr_find", "api_tools.show_task", "api_tools.compare",
                 "api_results.RunResult", "api_results.ArmResult", "api_results.TuneResult", "api_results.Comparison",
                 "errors.InputError", "errors.RecipeError", "errors.DataError", "pretext.base.PretextTask",
                 "pretext.registry.TASK_NAMES"):
        assert f'id="kpretrain.{name}"' in api, name
    index = (site / "index.html").read_text()
    assert "fonts.googleapis" not in index and "fonts.gstatic" not in index
    # the README's Python API example is included into the guide, as tests/test_api.py runs it
    guide = html.unescape(re.sub(r"<[^>]+>", "", (site / "guide" / "python-api.html").read_text()))
    assert "backbone = kpretrain.load_backbone(result.run_dir, arm=\"overlay\", seed=1)" in guide


def test_a_link_to_a_missing_page_fails_the_build(tmp_path):
    for name in ("README.md", "kpretrain", "recipes"):
        os.symlink(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write("\nSee [a page that is not there](guide/missing.md).\n")
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "guide/missing.md" in done.stdout + done.stderr


def test_the_readme_is_short_and_its_relative_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 260
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"(?m)^#+ (.*)$", text)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) > 20
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README links to {link}, which does not exist"
        else:
            assert anchor in anchors, f"README links to {link}, a heading it does not have"
    assert "## Python API" in text  # tests/test_api.py runs that section's example


def test_the_readme_recipe_is_the_shipped_one():
    block = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S).group(1)
    assert yaml.safe_load(block) == yaml.safe_load((ROOT / "recipes" / "fashion_overlay.yaml").read_text())


def test_every_recipe_named_in_the_docs_exists():
    texts = [README.read_text()] + [p.read_text() for p in DOCS.rglob("*.md")]
    named = {m for t in texts for m in re.findall(r"recipes/([\w.-]+\.yaml)", t)}
    assert "fashion_overlay.yaml" in named
    assert not [n for n in named if not (ROOT / "recipes" / n).exists()]


def _keys_page_names(key: str) -> str:
    """How `key` is written on the recipe-keys page: `pretrain.optimizer.name` as `optimizer.name`."""
    parts = key.split(".")
    if parts[0] in ("pretrain", "finetune") and len(parts) > 2 and parts[1] in SHARED_SECTIONS:
        return ".".join(parts[1:])
    return key


def _schema_keys(cls, prefix=""):
    """Every leaf key of the recipe schema (a section's name is not one)."""
    from kpretrain.recipe import schema

    hints = typing.get_type_hints(cls, vars(schema))
    for f in dataclasses.fields(cls):
        key = prefix + f.name.rstrip("_")
        subs = [a for a in typing.get_args(hints[f.name]) or (hints[f.name],) if dataclasses.is_dataclass(a)]
        if not subs:
            yield key
        for sub in subs:
            yield from _schema_keys(sub, key + ".")


def test_the_recipe_keys_page_names_every_key_of_the_contracts_and_the_schema(site):
    from kpretrain.recipe.schema import Recipe

    page = (site / "guide" / "recipe-keys.html").read_text()
    keys = set(CONTRACT_KEYS)
    if CONTRACTS.exists():  # the table itself, so that a group added there is checked here too
        table = CONTRACTS.read_text().split("## Recipe keys with fixed names", 1)[1].split("\n## ", 1)[0]
        for cell in re.findall(r"(?m)^\| (.+?) \|", table):
            for name in re.findall(r"`([a-z_]+(?:\.[a-z_*{},]+)*)", cell):
                base, _, group = name.partition("{")
                keys |= {base + k for k in group.rstrip("}").split(",")} if group else {name.rstrip(".*")}
    schema = set(_schema_keys(Recipe))
    assert "finetune.optimizer.lr_find.steps" in schema and len(schema) > 100
    named = set(re.findall(r"<code>([^<]+)</code>", page))
    # a section (`finetune.optimizer`) counts when the page names it or any of its keys (`finetune.optimizer.*`)
    missing = sorted(k for k in keys | schema if _keys_page_names(k) not in named
                     and (k in schema or not any(n.startswith(k + ".") for n in named)))
    assert not missing, f"docs/guide/recipe-keys.md does not name {missing} (a new section needs its marker)"


def test_the_cli_page_names_every_command_and_option():
    from kpretrain.cli_parser import build_parser

    page = (DOCS / "guide" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        if f"kpretrain {name}" not in page:
            missing.append(name)
        for action in parser._actions:
            missing += [f"{name} {o}" for o in action.option_strings
                        if o.startswith("--") and o not in ("--help", "--quiet", "--verbose") and o not in page]
    assert not missing, f"docs/guide/cli.md does not name {missing}"
