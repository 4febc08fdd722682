"""Backbone registry, heads and freezing."""

import keras
import numpy as np
import pytest

from kpretrain.errors import RecipeError
from kpretrain.models.backbones import BACKBONES, block_layers, block_names, create_backbone
from kpretrain.models.freezing import freeze_to_depth, resolve_depth
from kpretrain.models.heads import attach_head, create_head


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_backbones_build_with_blocks(name, shape):
    backbone = create_backbone(name, shape, seed=0)
    assert backbone.output_shape[0] is None and len(backbone.output_shape) == 2
    blocks = block_names(backbone)
    assert blocks == [f"block{i}" for i in range(1, len(blocks) + 1)] and len(blocks) >= 2
    assert all(block_layers(backbone, b) for b in blocks)
    assert backbone(np.zeros((2, *shape), "float32")).shape == (2, backbone.output_shape[-1])


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (create_backbone("small_cnn", (28, 28, 1), seed=s) for s in (3, 3, 4))
    wa, wb, wc = a.get_weights()[0], b.get_weights()[0], c.get_weights()[0]
    assert np.array_equal(wa, wb) and not np.array_equal(wa, wc)


def test_unknown_backbone_and_head():
    with pytest.raises(RecipeError, match="backbone.name"):
        create_backbone("resnet999", (28, 28, 1))
    with pytest.raises(RecipeError, match="unknown head"):
        create_head("transformer", 8, 2)


def test_resolve_depth_checks_range():
    backbone = create_backbone("small_cnn", (28, 28, 1))
    assert resolve_depth(backbone, "all") == 3
    with pytest.raises(RecipeError, match="transfer.frozen_depth"):
        resolve_depth(backbone, 4)


def _fit(model, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)


@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_frozen_blocks_do_not_change_and_others_do(bn):
    backbone = create_backbone("small_cnn", (28, 28, 1), widths=(8, 8, 8))
    frozen = freeze_to_depth(backbone, 2, bn=bn)
    assert frozen == ["block1", "block2"]
    before = {v.path: v.numpy().copy() for v in backbone.weights}
    model = attach_head(backbone, create_head("linear", backbone.output_shape[-1], 10))
    _fit(model)
    for v in backbone.weights:
        changed = not np.array_equal(before[v.path], v.numpy())
        block = v.path.split("/")[-2].split("_")[0]
        is_stat = "moving" in v.path
        if block in ("block1", "block2"):
            if is_stat:
                assert changed == (bn == "train"), v.path  # frozen BN keeps its statistics
            else:
                assert not changed, v.path
        else:
            assert changed, v.path


def test_frozen_all_freezes_every_weight():
    backbone = create_backbone("small_cnn", (28, 28, 1), widths=(8, 8, 8))
    freeze_to_depth(backbone, "all")
    model = attach_head(backbone, create_head("linear", backbone.output_shape[-1], 10))
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in model.layers[-1].trainable_weights}


def test_heads_are_swappable():
    backbone = create_backbone("mlp", (28, 28, 1))
    for kind in ("linear", "mlp"):
        head = create_head(kind, backbone.output_shape[-1], 7, seed=1)
        model = attach_head(backbone, head)
        assert model(np.zeros((3, 28, 28, 1), "float32")).shape == (3, 7)
