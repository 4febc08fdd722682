"""Recipe validation: typed config, --set overrides, arms and baselines, one-line errors naming the key."""

import pytest
import yaml

from kpretrain.errors import RecipeError
from kpretrain.recipe import apply_overrides, load_recipe, recipe_from_dict

BASE = {
    "name": "t",
    "seeds": 2,
    "data": {"dataset": "fashion_mnist", "labels_per_class": 100, "validation": 500, "batch_size": 64},
    "pretrain": {"task": "overlay", "epochs": 1},
    "transfer": {"frozen_depth": 1},
    "finetune": {"epochs": 3},
}


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_typed_config_and_defaults(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.seeds == [0, 1]
    assert r.data.batch_size == 64 and r.data.labels_per_class == 100
    assert r.pretrain.epochs == 1.0 and isinstance(r.pretrain.epochs, float)
    assert r.backbone.name == "small_cnn" and r.backbone.from_ is None
    assert r.evaluation.bn_refresh is True
    assert r.to_dict()["backbone"]["from"] is None


def test_arms_default_and_scratch_baseline(tmp_path):
    arms = load_recipe(write(tmp_path, BASE)).arm_recipes()
    assert list(arms) == ["scratch", "overlay"]
    scratch, overlay = arms["scratch"], arms["overlay"]
    assert scratch.pretrain.task == "none" and scratch.pretrain.epochs == 0
    assert scratch.transfer.frozen_depth == 0
    assert overlay.transfer.frozen_depth == 1
    # the same downstream budget and data in both arms
    assert scratch.finetune == overlay.finetune and scratch.data == overlay.data


def test_named_arms_override_any_protocol_key(tmp_path):
    raw = dict(BASE, arms={"frozen_all": {"transfer": {"frozen_depth": "all"}},
                           "rot": {"pretrain": {"task": "rotation"}, "finetune.epochs": 5}})
    arms = load_recipe(write(tmp_path, raw)).arm_recipes()
    # rot fine-tunes for 5 epochs: its matched scratch does too (the other arms share `scratch`)
    assert list(arms) == ["scratch", "scratch-rot", "frozen_all", "rot"]
    assert load_recipe(write(tmp_path, raw)).baseline_pairs() == {"frozen_all": "scratch", "rot": "scratch-rot"}
    assert arms["scratch-rot"].finetune.epochs == 5 and arms["scratch-rot"].pretrain.task == "none"
    assert arms["scratch-rot"].transfer.frozen_depth == 0 and arms["scratch"].finetune.epochs == BASE["finetune"]["epochs"]
    assert arms["frozen_all"].transfer.frozen_depth == "all"
    assert arms["rot"].pretrain.task == "rotation" and arms["rot"].finetune.epochs == 5
    assert arms["rot"].transfer.frozen_depth == 1


def test_set_overrides_are_yaml_typed(tmp_path):
    r = load_recipe(write(tmp_path, BASE), ["seeds=[0,1,2]", "transfer.frozen_depth=all", "data.batch_size=32",
                                            "pretrain.epochs=0.5", "data.labels_per_class=null"])
    assert r.seeds == [0, 1, 2]
    assert r.transfer.frozen_depth == "all"
    assert r.data.batch_size == 32
    assert r.pretrain.epochs == 0.5
    assert r.data.labels_per_class is None


def test_set_creates_nested_sections():
    raw = apply_overrides({"name": "x"}, ["pretrain.optimizer.learning_rate=0.01"])
    assert raw["pretrain"]["optimizer"]["learning_rate"] == 0.01


@pytest.mark.parametrize("overrides, needle", [
    (["pretrain.epoch=2"], "'pretrain.epoch': unknown key; did you mean 'pretrain.epochs'"),
    (["data.batch_size=abc"], "'data.batch_size'"),
    (["data.batch_size=0"], "'data.batch_size'"),
    (["data.batch_size=2.5"], "'data.batch_size'"),
    (["transfer.frozen_depth=-1"], "'transfer.frozen_depth'"),
    (["transfer.frozen_depth=half"], "'transfer.frozen_depth'"),
    (["pretrain.task=overlya"], "did you mean 'overlay'"),
    (["seeds=0"], "'seeds'"),
    (["seeds=[1,1]"], "'seeds'"),
    (["evaluation.bn_refresh=yes please"], "'evaluation.bn_refresh'"),
    (["pretrain.optimizer.name=adamm"], "did you mean 'adam'"),
    (["arms={a: {pretrain: {tsk: x}}}"], "'arms.a.pretrain.tsk': unknown key"),
    (["arms={a: {data: {batch_size: 3}}}"], "'arms.a.data'"),
    (["baselines=[scrach]"], "'baselines'"),
    (["nmae=x"], "did you mean 'name'"),
    (["runtime.deterministic=true", "runtime.jit_compile=true"], "'runtime.jit_compile': XLA is off under op determinism"),
])
def test_bad_values_name_the_key(tmp_path, overrides, needle):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, BASE), overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize("text, needle", [
    ("", "is empty"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("name: [unclosed\n", "YAML syntax error at line"),
    ("name: !!python/object/apply:os.system ['true']\n", "not allowed"),
])
def test_unreadable_files(tmp_path, text, needle):
    with pytest.raises(RecipeError, match=needle):
        load_recipe(write(tmp_path, text))


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(str(tmp_path / "nope.yaml"))
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(str(junk))


def test_bad_set_syntax(tmp_path):
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe(write(tmp_path, BASE), ["seeds"])


def test_name_defaults_to_file_name(tmp_path):
    raw = {k: v for k, v in BASE.items() if k != "name"}
    assert load_recipe(write(tmp_path, raw, "my_recipe.yaml")).name == "my_recipe"


def test_every_shipped_recipe_validates():
    import glob

    paths = sorted(glob.glob("recipes/*.yaml"))
    assert "recipes/fashion_overlay.yaml" in paths
    for path in paths:
        recipe = load_recipe(path)
        assert recipe.arm_recipes(), path


def test_recipe_from_dict_requires_name():
    with pytest.raises(RecipeError, match="'name'"):
        recipe_from_dict({"data": {"dataset": "mnist"}})


def test_op_determinism_is_on_by_default_unless_xla_is():
    base = {"name": "d", "data": {"dataset": "mnist"}}
    assert recipe_from_dict(base).runtime.deterministic is None
    assert recipe_from_dict(base).runtime.op_determinism is True
    xla = recipe_from_dict({**base, "runtime": {"jit_compile": True}}).runtime
    assert xla.op_determinism is False  # op determinism would turn XLA off: the default gives way
    assert recipe_from_dict({**base, "runtime": {"deterministic": False}}).runtime.op_determinism is False


def test_an_arm_names_its_baseline_and_bad_names_are_refused():
    """`arms.<name>.baseline`: compare with a declared arm (a tuned scratch, say) instead of the matched scratch."""
    base = {"name": "x", "pretrain": {"task": "overlay"},
            "arms": {"ov": {"baseline": "tuned"}, "rot": {"pretrain": {"task": "rotation"}},
                     "tuned": {"pretrain": {"epochs": 0}, "finetune": {"epochs": 3}}}}
    recipe = recipe_from_dict(base)
    assert list(recipe.arm_recipes()) == ["scratch", "tuned", "ov", "rot"]  # the named baseline runs first
    assert recipe.baseline_pairs() == {"ov": "tuned", "rot": "scratch"}
    for arms, needle in (({"ov": {"baseline": "ov"}}, "'arms.ov.baseline': 'ov' is not another arm"),
                         ({"ov": {"baseline": "nope"}, "b": {}}, "allowed: scratch, b"),
                         ({"ov": {"baseline": "b"}, "b": {"baseline": "scratch"}}, "'arms.ov.baseline': 'b'")):
        with pytest.raises(RecipeError, match=needle):
            recipe_from_dict({**base, "arms": arms})
    with pytest.raises(RecipeError, match="recipe key 'baseline': only an arm names its baseline"):
        recipe_from_dict({"name": "x", "baseline": "scratch"})


def test_image_size_and_channels_are_validated():
    assert recipe_from_dict({"name": "x", "data": {"image_size": [32, 32], "channels": 3}}).data.image_size == [32, 32]
    for data, needle in (({"image_size": [32]}, "'data.image_size': expected \\[height, width\\]"),
                         ({"image_size": [32, 0]}, "'data.image_size'"), ({"channels": 2}, "'data.channels': 2"),
                         ({"channels": 4}, "'data.channels'")):
        with pytest.raises(RecipeError, match=needle):
            recipe_from_dict({"name": "x", "data": data})


def test_an_arm_marked_as_the_natural_reference_and_bad_marks_are_refused():
    """`arms.<name>.reference: natural`: the arm whose gain the report's benefit column divides by."""
    base = {"name": "x", "arms": {"natural": {"pretrain": {"task": "rotation"}, "reference": "natural"},
                                  "ov": {"pretrain": {"task": "overlay"}}}}
    recipe = recipe_from_dict(base)
    arms = recipe.arm_recipes()
    assert arms["natural"].reference == "natural" and arms["ov"].reference is None and arms["scratch"].reference is None
    assert recipe.baseline_pairs() == {"natural": "scratch", "ov": "scratch"}  # the mark adds no matched scratch
    for raw, needle in (
            ({"name": "x", "reference": "natural"}, "recipe key 'reference': only an arm is the natural reference; "
                                                    "set arms.<name>.reference: natural"),
            ({**base, "arms": {**base["arms"], "ov": {"reference": "natural"}}},
             "'arms.ov.reference': only one arm may be the natural reference \\('natural' is already\\)"),
            ({**base, "arms": {"natural": {"reference": "natral"}}},
             "'arms.natural.reference': 'natral' is not allowed; allowed: natural; did you mean 'natural'"),
            ({**base, "arms": {**base["arms"], "scratch": {"reference": "natural"}}},
             "'arms.scratch.reference': 'scratch' is a baseline"),
            ({**base, "arms": {"ov": {"baseline": "tuned", "pretrain": {"task": "overlay"}},
                               "tuned": {"finetune": {"epochs": 3}, "reference": "natural"}}},
             "'arms.tuned.reference': 'tuned' is a baseline")):
        with pytest.raises(RecipeError, match=needle):
            recipe_from_dict(raw)


EXPONENT_RECIPE = """\
name: exponents
finetune:
  optimizer: {learning_rate: 1e-3, weight_decay: 5E-4, lr_find: {end_lr: 1e+2}}
pretrain:
  optimizer: {learning_rate: 1.0e-4}
"""


def test_numbers_with_an_exponent_but_no_dot_are_numbers_in_files_and_set(tmp_path):
    """YAML 1.1 reads 1e-3 as text; recipes read it as YAML 1.2 does, in files and in --set values."""
    r = load_recipe(write(tmp_path, EXPONENT_RECIPE))
    opt = r.finetune.optimizer
    assert (opt.learning_rate, opt.weight_decay, opt.lr_find.end_lr) == (1e-3, 5e-4, 100.0)
    assert r.pretrain.optimizer.learning_rate == 1e-4
    r = load_recipe(write(tmp_path, BASE), ["finetune.optimizer.learning_rate=1e-5", "pretrain.epochs=5E-1",
                                            "finetune.optimizer.lr_find.end_lr=1e+2"])
    assert (r.finetune.optimizer.learning_rate, r.pretrain.epochs, r.finetune.optimizer.lr_find.end_lr) == (1e-5, 0.5, 100.0)
    with pytest.raises(RecipeError, match="'finetune.optimizer.weight_decay': -0.001 is out of range"):
        load_recipe(write(tmp_path, BASE), ["finetune.optimizer.weight_decay=-1e-3"])  # a number, so a range error
    # only plain scalars: a quoted '1e-3' stays a string, and a plain 1e-3 is no string
    assert load_recipe(write(tmp_path, EXPONENT_RECIPE.replace("exponents", "'1e-3'"))).name == "1e-3"
    with pytest.raises(RecipeError, match="recipe key 'name': expected a string, got 0.001"):
        load_recipe(write(tmp_path, EXPONENT_RECIPE.replace("exponents", "1e-3")))


def test_stored_recipes_keep_strings_that_look_like_numbers(tmp_path):
    """recipe.yaml, best_recipe.yaml and final_recipe.yaml are written by dump_yaml and read by load_yaml."""
    from kpretrain.recipe.values import dump_yaml, load_yaml

    raw = {**BASE, "name": "1e3", "finetune": {"epochs": 3, "optimizer": {"learning_rate": 1e-05}}}
    text = dump_yaml(raw)
    assert "name: '1e3'" in text and "learning_rate: 1.0e-05" in text
    assert load_yaml(text) == raw
    assert load_recipe(write(tmp_path, text)).finetune.optimizer.learning_rate == 1e-05


ROUND_TRIP = [1e-05, 1e-3, 0.1, 1.0, 1e20, -2.5e-07, 3, 0, -1, True, False, None, "abc", "1e-3", "5E-4", "null",
              "10", "1.0", "yes", "all", "", " padded ", "a: b", "#x", "two\nlines", "ünï",
              [1e-05, "a", None, 2], {"method": "ema", "momentum": 1e-4}, {"a": [1, {"b": "1e3"}]}, [], {}]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=[repr(v) for v in ROUND_TRIP])
def test_one_value_encoder_round_trips_exactly(value):
    from kpretrain.recipe.values import format_value, parse_value

    text = format_value(value)
    assert "\n" not in text
    back = parse_value(text)
    assert back == value and repr(back) == repr(value)  # the type too: 1 is not 1.0, True is not 1
    assert apply_overrides({}, [f"x.y={text}"])["x"]["y"] == value  # --set reads it the same way


def test_the_encoder_writes_set_text():
    from kpretrain.recipe.values import format_value

    assert [format_value(v) for v in (1e-05, 1e-3, None, "null", "1e-3", [1, 2], {"method": "ema"}, True)] == [
        "1.0e-05", "0.001", "null", "'null'", "'1e-3'", "[1, 2]", "{method: ema}", "true"]
    with pytest.raises(RecipeError, match="has no recipe text"):
        format_value(object())


def test_api_overrides_and_arms_dotted_keys_use_the_encoder():
    from kpretrain.recipe.files import raw_recipe as _raw

    raw = _raw(BASE, {"finetune.optimizer.learning_rate": 1e-05, "arms": {"a": {"finetune.optimizer.weight_decay": 1e-06}},
                      "name": "1e-3"})
    assert raw["finetune"]["optimizer"]["learning_rate"] == 1e-05 and raw["name"] == "1e-3"
    assert recipe_from_dict(raw).arm_recipes()["a"].finetune.optimizer.weight_decay == 1e-06


def test_set_arms_on_a_recipe_without_arms_keeps_its_own_arm():
    recipe = load_recipe("recipes/fashion_overlay.yaml", ["arms.rotation.pretrain.task=rotation"])
    arms = recipe.arm_recipes()
    assert list(arms) == ["scratch", "overlay", "rotation"]  # the recipe's own arm stays, named as when alone
    assert arms["overlay"].pretrain.options == {"mode": "mean", "weight_range": [0.4, 0.6]}
    # the top level's overlay options belong to overlay: the rotation arm starts from rotation's defaults
    assert arms["rotation"].pretrain.task == "rotation" and arms["rotation"].pretrain.options == {}
    assert recipe.baseline_pairs() == {"overlay": "scratch", "rotation": "scratch"}
    # an arm that gives its task's options keeps them; one that keeps the task keeps the top level's
    given = load_recipe("recipes/fashion_overlay.yaml", ["arms.rotation.pretrain.task=rotation",
                                                         "arms.rotation.pretrain.options={angles: [0, 180]}",
                                                         "arms.longer.pretrain.epochs=2"]).arm_recipes()
    assert given["rotation"].pretrain.options == {"angles": [0, 180]}
    assert given["longer"].pretrain.options == {"mode": "mean", "weight_range": [0.4, 0.6]}
    # a recipe with arms: --set arms.X adds X and keeps the declared arms, no implicit arm appears
    declared = load_recipe("recipes/fashion_rotation.yaml", ["arms.more.transfer.frozen_depth=2"]).arm_recipes()
    assert list(declared) == ["scratch", "rotation_probe", "rotation_finetune", "more"]
    from kpretrain.recipe.files import arms_added_by_overrides

    assert arms_added_by_overrides("recipes/fashion_overlay.yaml", ["arms.rotation.pretrain.task=rotation"]) == \
        "--set added arm rotation; the recipe's own arm runs beside it as overlay"
    assert arms_added_by_overrides("recipes/fashion_rotation.yaml", ["arms.more.transfer.frozen_depth=2"]) == \
        "--set added arm more"
    assert arms_added_by_overrides("recipes/fashion_rotation.yaml", ["arms.rotation_probe.finetune.epochs=2"]) is None
    assert arms_added_by_overrides("recipes/fashion_overlay.yaml", ["seeds=1"]) is None
