"""`backbone.from`: load a backbone exported by an earlier run (`backbone.keras` or the `backbone/` SavedModel)."""

from __future__ import annotations

import json
import os

import keras

from kpretrain.errors import RecipeError
from kpretrain.models.backbones import block_names
from kpretrain.models.blocks import set_block_spec

KEY = "backbone.from"
FIX = "give a run directory, its backbone.keras or its backbone/ SavedModel directory"


class SavedModelBackbone(keras.layers.TFSMLayer):
    """A `TFSMLayer` whose weight names drop TF's ':0' suffix, which Keras optimizers cannot use in slot names."""

    def _add_existing_weight(self, weight):
        self._track_variable(keras.Variable(initializer=weight, trainable=weight.trainable, dtype=weight.dtype,
                                            shape=weight.shape,
                                            name=weight.name.replace("/", "_").replace(":", "_")))


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _check_input_shape(path: str, expected, input_shape) -> None:
    expected, given = tuple(expected), tuple(input_shape)
    if len(expected) != len(given) or any(e is not None and e != g for e, g in zip(expected, given)):
        raise RecipeError(f"{KEY}: {path} expects {_shape_text(expected)}, data has {_shape_text(given)}; "
                          f"use a backbone pre-trained on images of the data's shape")


def _reason(exc: Exception) -> str:
    """The first line of an exception's message, short enough for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _read_metadata(*candidates: str) -> dict | None:
    """The first `kpretrain.json` among `candidates`, or None."""
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                with open(candidate) as fh:
                    return json.load(fh)
            except (OSError, ValueError) as exc:
                raise RecipeError(f"{KEY}: cannot read {candidate} ({_reason(exc)}); remove it or restore the "
                                  f"one the run wrote") from None
    return None


def _resolve(path: str) -> tuple[str, str]:
    """(format, path) with format 'keras' or 'saved_model'; a run directory resolves to its backbone."""
    if not os.path.exists(path):
        raise RecipeError(f"{KEY}: {path} does not exist; {FIX}")
    if os.path.isdir(path):
        for fmt, candidate, marker in (("keras", os.path.join(path, "backbone.keras"), None),
                                       ("saved_model", path, "saved_model.pb"),
                                       ("saved_model", os.path.join(path, "backbone"), "saved_model.pb")):
            if os.path.exists(os.path.join(candidate, marker) if marker else candidate):
                return fmt, candidate
    elif path.endswith(".keras"):
        return "keras", path
    raise RecipeError(f"{KEY}: {path} is neither a .keras file nor a SavedModel directory; {FIX}")


def _load_keras(path: str) -> keras.Model:
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # any failure means the file is not a loadable Keras backbone
        raise RecipeError(f"{KEY}: cannot load {path} as a Keras file ({_reason(exc)}); {FIX}") from None


def _load_saved_model(path: str) -> tuple[keras.Model, tuple]:
    try:
        layer = SavedModelBackbone(path, call_endpoint="serve", name="saved_model_backbone")
    except Exception as exc:  # unreadable SavedModel or no 'serve' endpoint
        raise RecipeError(f"{KEY}: cannot load {path} as a SavedModel with endpoint 'serve' ({_reason(exc)}); "
                          f"{FIX}") from None
    (spec,), _ = layer.call_endpoint_fn.concrete_functions[0].structured_input_signature
    expected = tuple(spec.shape[1:])
    inputs = keras.Input(shape=expected, name="images")
    return keras.Model(inputs, layer(inputs), name="saved_model_backbone"), expected


def load_backbone(path: str, input_shape) -> tuple[keras.Model, dict]:
    """The backbone at `path` and facts about it: format, resolved path, input shape, blocks, `depth_choices`
    (values `transfer.frozen_depth` may take), trainable, and `metadata` (its `kpretrain.json`, or None).

    A `.keras` backbone keeps its blocks (any frozen depth).  A SavedModel is one opaque layer (frozen depth 0
    or all); its weights are trainable only if the SavedModel exposes trainable variables (Keras exports do),
    and its batch norm always runs in inference mode (the `serve` endpoint), so it is never refreshed.
    """
    fmt, resolved = _resolve(str(path))
    here = os.path.dirname(resolved)
    if fmt == "keras":
        backbone = _load_keras(resolved)
        expected = tuple(backbone.input_shape[1:])
        metadata = _read_metadata(os.path.join(here, "backbone", "kpretrain.json"), os.path.join(here, "kpretrain.json"))
        set_block_spec(backbone, (metadata or {}).get("block_patterns"))  # the blocks the run that saved it used
        blocks = block_names(backbone)
        depth_choices = [*range(len(blocks) + 1), "all"]
    else:
        backbone, expected = _load_saved_model(resolved)
        metadata = _read_metadata(os.path.join(resolved, "kpretrain.json"), os.path.join(here, "kpretrain.json"))
        blocks = []
        depth_choices = [0, "all"]
    _check_input_shape(resolved, expected, input_shape)
    return backbone, {"format": fmt, "path": resolved, "input_shape": list(expected), "blocks": blocks,
                      "depth_choices": depth_choices, "trainable": bool(backbone.trainable_weights),
                      "metadata": metadata}
