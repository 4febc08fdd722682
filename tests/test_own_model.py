"""Does pre-training help MY model: a factory, a `.keras` file and a keras.applications model as the backbone,
each compared with its own matched scratch (the same architecture, re-initialised)."""

import json

import keras
import numpy as np
import pytest
import yaml

from kpretrain.cli import main
from kpretrain.errors import RecipeError
from kpretrain.models.backbones import block_layers, block_names, create_backbone
from kpretrain.models.blocks import find_blocks, leaf_layers
from kpretrain.models.freezing import freeze_to_depth
from tests.helpers import tiny_npz, tiny_recipe_dict

FACTORY = "tests.test_own_model:my_net"


def my_net(input_shape, seed=0, width=4):
    """A user's model without kpretrain's layer names: two strided convolutions close two blocks."""
    def init(offset):
        return keras.initializers.HeNormal(seed=seed * 100 + offset)

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer=init(1), name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_norm")(x)
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", kernel_initializer=init(2), name="down_a")(x)
    x = keras.layers.BatchNormalization(name="norm_a")(x)
    x = keras.layers.ReLU(name="act_a")(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", kernel_initializer=init(3), name="down_b")(x)
    x = keras.layers.BatchNormalization(name="norm_b")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", kernel_initializer=init(4), name="head_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="my_net")


def names(layers):
    return [layer.name for layer in layers]


def test_blocks_of_a_factory_a_keras_file_and_an_application(tmp_path):
    net = create_backbone(FACTORY, (16, 16, 1), seed=0)
    assert [(b.name, names(b.layers)) for b in find_blocks(net)] == [
        ("stage1", ["stem", "stem_norm", "down_a"]), ("stage2", ["norm_a", "act_a", "down_b"]),
        ("stage3", ["norm_b", "head_conv", "pool"])]  # each strided layer closes a block
    path = str(tmp_path / "user_model.keras")
    net.save(path)
    loaded = create_backbone(path, (16, 16, 1), seed=0)
    assert block_names(loaded) == ["stage1", "stage2", "stage3"] and names(leaf_layers(loaded)) == names(
        leaf_layers(net))
    given = create_backbone(path, (16, 16, 1), seed=0, blocks=["stem", "down_a|norm_a|act_a", "down_b|norm_b|head"])
    assert block_names(given) == ["stem", "down_a|norm_a|act_a", "down_b|norm_b|head"]
    assert names(block_layers(given, "stem")) == ["stem", "stem_norm"]
    with pytest.raises(RecipeError, match="'backbone.blocks': no layer of 'my_net' falls in block 'nothing'"):
        create_backbone(path, (16, 16, 1), seed=0, blocks=["stem", "nothing"])
    resnet = create_backbone("keras.applications.ResNet50", (32, 32, 3), seed=0)
    assert block_names(resnet) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert names(block_layers(resnet, "conv1"))[:3] == ["conv1_pad", "conv1_conv", "conv1_bn"]
    assert "pool1_pool" in names(block_layers(resnet, "conv1"))  # unnamed layers join the block before them
    frozen = freeze_to_depth(resnet, 2, "frozen")
    assert frozen == ["conv1", "conv2"]
    expected = set(names(block_layers(resnet, "conv1")) + names(block_layers(resnet, "conv2")))
    assert {layer.name for layer in leaf_layers(resnet) if not layer.trainable} == expected


def test_fresh_weights_are_a_function_of_the_seed_for_every_form(tmp_path):
    path = str(tmp_path / "user_model.keras")
    saved = my_net((16, 16, 1), seed=5)
    saved.save(path)
    for name in (FACTORY, path, "keras.applications.MobileNetV3Small"):
        shape = (32, 32, 3) if name.startswith("keras.") else (16, 16, 1)
        a, b, other = (create_backbone(name, shape, seed=s) for s in (0, 0, 1))
        assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights())), name
        assert not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), other.get_weights())), name
    as_saved = create_backbone(path, (16, 16, 1), seed=0, init="file")
    assert all(np.array_equal(x, y) for x, y in zip(as_saved.get_weights(), saved.get_weights()))
    fresh = create_backbone(path, (16, 16, 1), seed=5)  # fresh: not the file's weights, even with its seed
    assert not all(np.array_equal(x, y) for x, y in zip(fresh.get_weights(), saved.get_weights()))


@pytest.mark.parametrize("name, shape, message", [
    ("keras.applications.NoSuchNet", (32, 32, 3), "unknown application 'NoSuchNet'"),
    ("keras.applications.ResNet50", (16, 16, 1), "cannot take images of shape (16, 16, 1)"),
    ("tests.no_such_module:net", (16, 16, 1), "cannot import the factory tests.no_such_module:net"),
])
def test_a_backbone_that_cannot_be_built_is_one_line(name, shape, message):
    with pytest.raises(RecipeError, match="recipe key 'backbone.name'") as caught:
        create_backbone(name, shape, seed=0)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """One --smoke run: the user's factory and the user's .keras file, each pre-trained with rotation and compared
    with its matched scratch."""
    root = tmp_path_factory.mktemp("own")
    user_file = str(root / "user_model.keras")
    my_net((16, 16, 1), seed=3, width=6).save(user_file)
    recipe = tiny_recipe_dict(tiny_npz(root / "tiny.npz", n_train=200, n_test=40), name="own")
    recipe.update(seeds=[0], backbone={"name": FACTORY}, pretrain={"task": "rotation", "epochs": 1},
                  transfer={"frozen_depth": 1})
    recipe["arms"] = {"factory": {}, "file": {"backbone": {"name": user_file}}}
    path = root / "own.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = root / "run"
    assert main(["run", str(path), "--smoke", "--out", str(out)]) == 0
    return out, user_file


def test_each_arm_is_compared_with_a_scratch_of_its_own_architecture(own_run, capsys):
    out, user_file = own_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arms"]["factory"]["baseline"] == "scratch"
    assert metrics["arms"]["file"]["baseline"] == "scratch-file"
    for arm, baseline in (("factory", "scratch"), ("file", "scratch-file")):
        mine, theirs = metrics["arms"][arm]["architecture"], metrics["arms"][baseline]["architecture"]
        assert mine == theirs and mine["parameters"] > 0
    assert metrics["arms"]["file"]["architecture"]["name"] == user_file
    assert [b[0] for b in metrics["arms"]["factory"]["architecture"]["blocks"]] == ["stage1", "stage2", "stage3"]
    report = (out / "report.md").read_text()
    assert f"- `file`: {user_file}, {metrics['arms']['file']['architecture']['parameters']:,} parameters" in report
    assert "; compared with `scratch-file`" in report
    assert main(["run", str(out / "recipe.yaml"), "--smoke", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"arm file: {user_file} (" in plan and "stage1 (3 layers)" in plan
    assert "arm scratch-file: " + user_file in plan


def test_export_and_load_backbone_give_the_runs_weights(own_run):
    import kpretrain

    out, user_file = own_run
    metrics = json.loads((out / "metrics.json").read_text())
    for arm in ("factory", "file"):
        unit = metrics["arms"][arm]["pretrain_unit"][0]
        backbone = kpretrain.load_backbone(str(out), arm=arm, seed=0)
        recorded = create_backbone(FACTORY if arm == "factory" else user_file, (16, 16, 1), seed=0)
        recorded.load_weights(str(out / "units" / f"{unit}.weights.h5"))
        assert all(np.array_equal(x, y) for x, y in zip(backbone.get_weights(), recorded.get_weights()))
        scratch = create_backbone(FACTORY if arm == "factory" else user_file, (16, 16, 1), seed=0)
        assert names(leaf_layers(scratch)) == names(leaf_layers(backbone))
        assert [w.shape for w in scratch.weights] == [w.shape for w in backbone.weights]
        assert not all(np.array_equal(x, y) for x, y in zip(scratch.get_weights(), backbone.get_weights()))
    assert main(["export", str(out), "--arm", "file", "--seed", "0", "-q"]) == 0
    exported = out / "backbones" / "file" / "seed0"
    info = json.loads((exported / "backbone" / "kpretrain.json").read_text())
    assert info["backbone"] == user_file and info["blocks"] == ["stage1", "stage2", "stage3"]
    loaded = keras.saving.load_model(str(exported / "backbone.keras"), safe_mode=True)
    assert all(np.array_equal(x, y) for x, y in zip(loaded.get_weights(),
                                                    kpretrain.load_backbone(str(out), "file", 0).get_weights()))


def test_a_mismatched_input_shape_is_exit_2_in_one_line(tmp_path, capsys):
    user_file = str(tmp_path / "user_model.keras")
    my_net((28, 28, 1)).save(user_file)
    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz", n_train=100, n_test=20))
    recipe["backbone"] = {"name": user_file}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "takes images of shape (28, 28, 1), the data are (16, 16, 1)" in err
    assert main(["run", str(path), "--smoke", "--dry-run", "--set", "backbone.name=keras.applications.NoSuchNet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "recipe key 'backbone.name': unknown application 'NoSuchNet'" in err
    fixed = "tests.test_own_model:fixed_input"  # a factory that ignores the shape it is given
    assert main(["run", str(path), "--smoke", "--dry-run", "--set", f"backbone.name={fixed}"]) == 2
    assert "the model of tests.test_own_model:fixed_input takes images of shape (28, 28, 1)" in capsys.readouterr().err


def fixed_input(input_shape, seed=0):
    return my_net((28, 28, 1), seed=seed)


def test_the_python_api_takes_a_model_or_a_factory_object(tmp_path):
    import kpretrain

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz", n_train=120, n_test=20), name="api_own")
    recipe.update(seeds=[0], pretrain={"task": "rotation", "epochs": 1}, transfer={"frozen_depth": 1})
    local = lambda input_shape, seed=0: my_net(input_shape, seed=seed, width=3)  # noqa: E731 - not importable
    for backbone, name in ((my_net, FACTORY), (local, "tests.test_own_model:test_the_python_api_takes_a_model_or_"
                                                      "a_factory_object.<locals>.<lambda>"),
                           (my_net((16, 16, 1), width=5), str(tmp_path / "model" / "user_backbone.keras"))):
        out = tmp_path / ("model" if isinstance(backbone, keras.Model) else f"run{len(name)}")
        result = kpretrain.run(recipe, out=str(out), smoke=True, backbone=backbone)
        arms = result.metrics["arms"]
        assert arms["rotation"]["architecture"]["name"] == name
        assert arms["rotation"]["architecture"] == arms["scratch"]["architecture"]
    assert arms["rotation"]["architecture"]["parameters"] == my_net((16, 16, 1), width=5).count_params()


def test_an_application_starts_from_a_local_weights_file_and_its_scratch_from_fresh_weights(tmp_path):
    from kpretrain.recipe import recipe_from_dict

    name, shape = "keras.applications.MobileNetV3Small", (32, 32, 3)
    source = create_backbone(name, shape, seed=3)
    weights = str(tmp_path / "mobilenet.weights.h5")
    source.save_weights(weights)
    loaded = create_backbone(name, shape, seed=0, weights=weights)
    assert all(np.array_equal(x, y) for x, y in zip(loaded.get_weights(), source.get_weights()))
    with pytest.raises(RecipeError, match="'backbone.weights': .*nothing is downloaded at run time"):
        create_backbone(name, shape, seed=0, weights=str(tmp_path / "imagenet.h5"))
    recipe = tiny_recipe_dict("unused.npz")
    recipe.update(backbone={"name": name, "weights": weights}, pretrain={"task": "none"})
    arms, pairs = recipe_from_dict(recipe).arm_recipes(), recipe_from_dict(recipe).baseline_pairs()
    assert pairs == {"transfer": "scratch"}  # an arm that starts from trained weights
    arm = arms["transfer"]
    assert arm.backbone.weights == weights and arms["scratch"].backbone.weights is None
    assert arms["scratch"].backbone.name == name


def test_backbone_from_of_another_architecture_than_its_scratch_is_refused(tmp_path, capsys):
    exported = str(tmp_path / "backbone.keras")
    create_backbone("resnet_small", (16, 16, 1), seed=0, widths=(4, 8)).save(exported)
    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz", n_train=100, n_test=20))
    recipe.update(backbone={"name": "small_cnn", "from": exported}, pretrain={"task": "none"})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "recipe key 'backbone.name': arm 'transfer'" in err and "another architecture (small_cnn" in err
    fixed = ["--set", "backbone.name=resnet_small", "--set", "backbone.options={widths: [4, 8]}"]
    assert main(["run", str(path), "--smoke", "--dry-run", *fixed]) == 0
    assert "arm scratch: resnet_small (" in capsys.readouterr().out


def test_tune_searches_frozen_depth_over_the_blocks_found(own_run):
    from kpretrain.experiment import prepare
    from kpretrain.recipe import load_recipe
    from kpretrain.tuning.space import default_space

    out, _ = own_run
    recipe = load_recipe(str(out / "recipe.yaml"))
    space = default_space(recipe, prepare(recipe, smoke=True))
    assert space["arms.factory.transfer.frozen_depth"] == {"int": [0, 3]}  # stage1..stage3 of my_net
