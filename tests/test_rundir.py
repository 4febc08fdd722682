"""`kpretrain.rundir.first_difference`: the one "which key differs" of run directories and tune searches."""

from kpretrain.rundir import IGNORED_KEYS, first_difference


def test_first_difference_names_the_dotted_key_and_both_values():
    here = {"name": "a", "finetune": {"epochs": 3, "optimizer": {"lr": 0.1}}}
    there = {"name": "a", "finetune": {"epochs": 3, "optimizer": {"lr": 0.01}}}
    assert first_difference(here, there) == ("finetune.optimizer.lr", 0.1, 0.01)
    assert first_difference(here, here) is None
    assert first_difference(1, 2) == ("", 1, 2)


def test_first_difference_follows_the_order_of_here_then_keys_only_there_has():
    here = {"b": 1, "a": 1}
    assert first_difference(here, {"a": 2, "b": 2}) == ("b", 1, 2)
    assert first_difference({"a": 1}, {"a": 1, "z": 5}) == ("z", "(absent)", 5)
    assert first_difference({"a": 1, "y": 5}, {"a": 1}) == ("y", 5, "(absent)")


def test_missing_keys_are_skipped_when_told():
    older = {"finetune": {"epochs": 3}, "data": {"name": "x"}}
    newer = {"finetune": {"epochs": 3, "added": True}, "tune": {}, "data": {"name": "y"}}
    assert first_difference(older, newer, skip_missing=True) == ("data.name", "x", "y")
    assert first_difference({"a": {"b": 1}}, {"a": {"c": 2}}, skip_missing=True) is None


def test_the_tune_resume_guard_keeps_its_name_for_it():
    from kpretrain.tuning import _difference

    older = {"finetune": {"epochs": 3}, "data": {"name": "x"}}
    newer = {"finetune": {"epochs": 3, "added": True}, "tune": {}, "data": {"name": "y"}}
    assert _difference(older, newer) == "data.name" and _difference(older, older) is None


def test_ignored_keys_are_not_compared():
    here = {"runtime": {"verbose": 0, "tensorboard": False, "jit_compile": True}}
    there = {"runtime": {"verbose": 2, "tensorboard": True, "jit_compile": True}}
    assert first_difference(here, there, ignore=IGNORED_KEYS) is None
    assert first_difference(here, there) == ("runtime.verbose", 0, 2)
    assert first_difference({"runtime": {"verbose": 0}}, {"runtime": {}}, ignore=IGNORED_KEYS) is None
