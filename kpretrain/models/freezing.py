"""Layer-freezing controls: freeze the first blocks of a backbone, with a choice for batch norm."""

from __future__ import annotations

import keras

from kpretrain.errors import RecipeError
from kpretrain.models.backbones import block_names
from kpretrain.models.blocks import find_blocks


def resolve_depth(backbone: keras.Model, frozen_depth) -> int:
    """`frozen_depth` (int or 'all') as a number of blocks, checked against the backbone's depth.

    Args:
        backbone: a backbone whose layers are named `block<i>_...`.
        frozen_depth: a number of blocks, or "all" (`transfer.frozen_depth`).

    Returns:
        The number of blocks: `frozen_depth` itself, or the backbone's depth for "all".

    Raises:
        RecipeError: `frozen_depth` is negative or exceeds the backbone's blocks.
    """
    blocks = block_names(backbone)
    if frozen_depth == "all":
        return len(blocks)
    if not 0 <= int(frozen_depth) <= len(blocks):
        raise RecipeError(
            f"recipe key 'transfer.frozen_depth': {frozen_depth} exceeds the {len(blocks)} blocks of backbone "
            f"{backbone.name!r} ({', '.join(blocks)}); allowed: 0..{len(blocks)} or all")
    return int(frozen_depth)


def freeze_to_depth(backbone: keras.Model, frozen_depth, bn: str = "frozen") -> list[str]:
    """Freeze blocks 1..depth of `backbone` (all of it for 'all'); returns the frozen block names.

    bn='frozen': batch norm in frozen blocks runs in inference mode (Keras' fine-tuning convention).
    bn='train': it normalises with batch statistics and updates its moving statistics, scale and offset fixed.
    Blocks not frozen are wholly trainable, whatever an earlier call froze (gradual unfreezing calls it again).

    Args:
        backbone: a backbone whose layers are named `block<i>_...`; changed in place.
        frozen_depth: the number of blocks to freeze from the input side, or "all".
        bn: "frozen" or "train" (`transfer.bn`), what batch norm of the frozen blocks does.

    Returns:
        The frozen block names, e.g. ['block1'].

    Raises:
        RecipeError: `frozen_depth` is negative or exceeds the backbone's blocks.
    """
    depth = resolve_depth(backbone, frozen_depth)
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = True
        if isinstance(layer, keras.layers.BatchNormalization):  # a layer's setter leaves variables it
            for variable in (layer.gamma, layer.beta):           # already counts as trainable as they are:
                if variable is not None:                         # an earlier bn='train' froze these two
                    variable.trainable = True
    frozen = find_blocks(backbone)[:depth]  # found once: each lookup walks every layer
    for block in frozen:
        for layer in block.layers:
            if bn == "train" and isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
                for variable in (layer.gamma, layer.beta):
                    if variable is not None:
                        variable.trainable = False
            else:
                layer.trainable = False
    if frozen_depth == "all" and bn != "train":
        backbone.trainable = False
    return [block.name for block in frozen]
