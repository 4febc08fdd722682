"""Blocks of any backbone: the units of `transfer.frozen_depth`, gradual unfreezing and statistics init.

A backbone's layers (the leaves, nested models included) are split into consecutive blocks, from the input side:

1. by `backbone.blocks` when the recipe gives it: a list of layer-name prefixes or regular expressions, one per
   block (a layer belongs to the first block whose pattern matches the start of its name);
2. else by the naming of a known family: `block<i>_` (kpretrain's built-ins, VGG), `block<i><letter>_`
   (EfficientNet), `block_<i>_` (MobileNetV2), `conv<i>_` (ResNet, ResNetV2, DenseNet), `_stage_<i>_`
   (ConvNeXt);
3. else each layer that lowers the spatial resolution closes a block (MobileNetV3, a user's own model).

Layers before the first block (a stem without a block name, preprocessing) join the first block; layers after a
block that match no pattern (pooling, a top convolution) join the block before them.
"""

from __future__ import annotations

import dataclasses
import re
import weakref

import keras

from kpretrain.errors import RecipeError

FAMILIES = (  # (pattern whose group 1 numbers the block, block name format)
    (re.compile(r"^block(\d+)_"), "block{}"),
    (re.compile(r"^block(\d+)[a-z]_"), "block{}"),
    (re.compile(r"^block_(\d+)_"), "block{}"),
    (re.compile(r"^conv(\d+)_"), "conv{}"),
    (re.compile(r"_stage_(\d+)_"), "stage{}"),
)
_SPECS: "weakref.WeakKeyDictionary[keras.Model, tuple]" = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class Block:
    """One block: its name and its layers (leaves), in input-to-output order."""

    name: str
    layers: tuple


def set_block_spec(model: keras.Model, patterns) -> None:
    """Make `patterns` (`backbone.blocks`: prefixes or regular expressions, one per block) the blocks of `model`.

    Raises:
        RecipeError: a pattern is not a valid regular expression, or no layer falls in its block.
    """
    if not patterns:
        return
    spec = tuple(str(p) for p in patterns)
    for pattern in spec:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RecipeError(f"recipe key 'backbone.blocks': {pattern!r} is not a prefix or regular expression "
                              f"({exc})") from None
    names = [layer.name for layer in leaf_layers(model)]
    found = {_spec_key(name, spec) for name in names}
    missing = [p for p in spec if p not in found]
    if missing:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise RecipeError(f"recipe key 'backbone.blocks': no layer of {model.name!r} falls in block {missing[0]!r} "
                          f"(its layers: {shown}); give one prefix or regular expression per block, in order")
    _SPECS[model] = spec


def block_spec(model: keras.Model) -> tuple | None:
    """The `backbone.blocks` patterns given to `model`, or None (found by family or resolution)."""
    return _SPECS.get(model)


def leaf_layers(model: keras.Model) -> list:
    """The layers of `model` that hold no other layers, nested models opened, in order; input layers left out."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inner = list(layer._flatten_layers(include_self=False, recursive=False))
        out.extend(leaf_layers(layer) if isinstance(layer, keras.Model) else [layer] if not inner else
                   [sub for sub in layer._flatten_layers(include_self=False, recursive=True)
                    if not list(sub._flatten_layers(include_self=False, recursive=False))])
    return out


def find_blocks(model: keras.Model) -> list[Block]:
    """The blocks of `model` (see the module's doc), in input-to-output order.

    Args:
        model: a backbone (a Keras model).

    Returns:
        A list of `Block`s; empty for a model with no layers to split (one opaque SavedModel layer).

    Example:
        >>> [b.name for b in find_blocks(keras.applications.ResNet50(include_top=False, weights=None,
        ...                                                             input_shape=(32, 32, 3)))]
        ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
    """
    layers = leaf_layers(model)
    spec = block_spec(model)
    if spec is not None:
        keys = [_spec_key(layer.name, spec) for layer in layers]
    else:
        keys = _family_keys(layers)
        if keys is None:
            keys = _resolution_keys(layers)
    blocks: list[Block] = []
    for block in _group(layers, keys):  # a block without weights (a trailing pooling) joins the one before it
        if blocks and not any(layer.weights for layer in block.layers):
            blocks[-1] = Block(blocks[-1].name, blocks[-1].layers + block.layers)
        else:
            blocks.append(block)
    return blocks


def _spec_key(name: str, spec: tuple) -> str | None:
    for pattern in spec:
        if name.startswith(pattern) or re.match(pattern, name):
            return pattern
    return None


def _family_keys(layers: list) -> list | None:
    """Block keys by the first family whose pattern names some layer, or None."""
    for pattern, fmt in FAMILIES:
        found = [pattern.search(layer.name) for layer in layers]
        if any(found):
            return [fmt.format(int(m.group(1))) if m else None for m in found]
    return None


def _resolution_keys(layers: list) -> list:
    """`stage<i>`: a new block starts after each layer that lowers the spatial resolution (strides > 1)."""
    keys, index = [], 1
    for layer in layers:
        keys.append(f"stage{index}")
        if _lowers_resolution(layer):
            index += 1
    return keys


def _lowers_resolution(layer) -> bool:
    """A strided convolution or pooling (global pooling and squeeze-excitation do not count)."""
    strides = getattr(layer, "strides", None)
    return strides is not None and max(tuple(strides) if isinstance(strides, (tuple, list)) else (strides,)) > 1


def _group(layers: list, keys: list) -> list[Block]:
    """Consecutive blocks from per-layer keys: unnamed leading layers join the first block, others the one before."""
    order: list[str] = []
    members: dict[str, list] = {}
    pending: list = []
    current = None
    for layer, key in zip(layers, keys):
        if key is not None and key != current:
            current = key
            if key not in members:
                order.append(key)
                members[key] = []
            if pending:
                members[key].extend(pending)
                pending = []
        if current is None:
            pending.append(layer)
        else:
            members[current].append(layer)
    return [Block(name, tuple(members[name])) for name in order]


def signature(model: keras.Model) -> tuple:
    """What makes two backbones the same architecture: each weighted layer's class and weight shapes, in order."""
    return tuple((type(layer).__name__, tuple(tuple(w.shape) for w in layer.weights))
                 for layer in leaf_layers(model) if layer.weights)


def describe(model: keras.Model, name: str) -> dict:
    """The record of a backbone's architecture: `name`, `parameters` and its `blocks` as [name, layers]."""
    return {"name": name, "parameters": int(model.count_params()),
            "blocks": [[block.name, len(block.layers)] for block in find_blocks(model)]}
