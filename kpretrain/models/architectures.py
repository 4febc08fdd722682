"""Where a backbone's architecture comes from: the forms `backbone.name` takes besides the registered names.

- `keras.applications.<Name>` (ResNet50, MobileNetV3Small, EfficientNetB0, ConvNeXtTiny, ...): built without its
  top, with global average pooling, from fresh seeded weights or a local weights file (`backbone.weights`); nothing
  is downloaded at run time;
- `package.module:function`: a factory with the signature of the built-in builders,
  `function(input_shape, seed, **options) -> keras.Model` (the current directory is importable);
- a `.keras` file: its architecture, with fresh seeded weights, or its own weights with `backbone.init: file`;
  loaded in Keras safe mode.

Fresh weights are a deterministic function of the seed (`reseeded`): every arm of a seed starts from the same
backbone, and the matched scratch is the same architecture re-initialised, never another backbone.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys

import keras

from kpretrain.errors import RecipeError

APPLICATIONS = "keras.applications."
KEY = "recipe key 'backbone.name'"


def kind(name: str) -> str:
    """What `backbone.name` names: "application", "factory", "file" or "registered"."""
    if name.startswith(APPLICATIONS):
        return "application"
    if name.endswith(".keras"):
        return "file"
    if ":" in name:
        return "factory"
    return "registered"


def build(name: str, input_shape, seed: int, options: dict, *, weights: str | None = None,
          init: str = "random") -> keras.Model:
    """The backbone `name` (an application, a factory or a `.keras` file) for images of `input_shape`.

    Args:
        name: `keras.applications.<Name>`, `package.module:function` or a path ending in `.keras`.
        input_shape: (height, width, channels) of the images.
        seed: the seed of fresh weights.
        options: keyword arguments of the application or the factory.
        weights: a local weights file of an application (`backbone.weights`), or None for fresh weights.
        init: for a `.keras` file, "fresh" (seeded weights) or "file" (its own weights).

    Returns:
        A Keras model from images to a feature vector.

    Raises:
        RecipeError: an unknown application, a factory that cannot be imported or returns no model, a file that
            cannot be loaded, or an input shape the model cannot take; one line naming the key and the fix.
    """
    shape = tuple(int(d) for d in input_shape)
    found = kind(name)
    if found == "application":
        return _application(name, shape, seed, options, weights)
    if found == "factory":
        return _factory(name, shape, seed, options)
    return _file(name, shape, seed, init)


def _application(name: str, shape: tuple, seed: int, options: dict, weights: str | None) -> keras.Model:
    short = name[len(APPLICATIONS):]
    builder = getattr(keras.applications, short, None)
    if builder is None or not short[:1].isupper() or not callable(builder):
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise RecipeError(f"{KEY}: unknown application {short!r}; allowed: keras.applications.<"
                          f"{', '.join(known[:8])}, ...> (see keras.applications)")
    if weights is not None and not os.path.exists(weights):
        raise RecipeError(f"recipe key 'backbone.weights': {weights} not found; nothing is downloaded at run time: "
                          f"save the weights file (e.g. keras.applications.{short}(include_top=False, "
                          f"weights='imagenet').save_weights(...)) on a machine with internet, then give its path")
    try:
        model = builder(include_top=False, weights=weights, input_shape=shape, pooling="avg", **options)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{KEY}: {name} cannot take images of shape {shape} with options {options} "
                          f"({_first_line(exc)}); set data.image_size (e.g. [32, 32]) and data.channels: 3, or "
                          f"change backbone.options") from None
    return model if weights is not None else reseeded(model, seed)


def _factory(name: str, shape: tuple, seed: int, options: dict) -> keras.Model:
    module_name, _, attribute = name.partition(":")
    if os.getcwd() not in sys.path:  # a factory module beside the recipe, as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"{KEY}: cannot import the factory {name} ({_first_line(exc)}); give "
                          f"package.module:function importable from the current directory") from None
    try:
        model = factory(shape, seed=seed, **options)
    except TypeError as exc:
        raise RecipeError(f"recipe key 'backbone.options': the factory {name} does not take {options} "
                          f"({_first_line(exc)}); it must be function(input_shape, seed, **options)") from None
    if not isinstance(model, keras.Model):
        raise RecipeError(f"{KEY}: the factory {name} returned {type(model).__name__}, not a keras.Model; it must "
                          f"be function(input_shape, seed, **options) -> keras.Model")
    check_input_shape(f"the model of {name}", tuple(model.input_shape[1:]), shape)
    return model


def _file(path: str, shape: tuple, seed: int, init: str) -> keras.Model:
    if not os.path.exists(path):
        raise RecipeError(f"{KEY}: {path} not found; give a .keras file saved with model.save(...)")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not a loadable Keras model
        raise RecipeError(f"{KEY}: cannot load {path} in Keras safe mode ({_first_line(exc)}); save the model "
                          f"with built-in layers (or register its custom ones)") from None
    check_input_shape(path, tuple(model.input_shape[1:]), shape)
    return model if init == "file" else reseeded(model, seed)


def check_input_shape(what: str, expected: tuple, shape: tuple) -> None:
    """Refuse data of `shape` for a model whose input is `expected` (None matches any size), in one line."""
    if len(expected) != len(shape) or any(e is not None and e != s for e, s in zip(expected, shape)):
        raise RecipeError(f"{KEY}: {what} takes images of shape {tuple(expected)}, the data are {tuple(shape)}; "
                          f"set data.image_size and data.channels to match")


def reseeded(model: keras.Model, seed: int) -> keras.Model:
    """A copy of `model` (same architecture and layer names) whose weights are drawn afresh, a function of `seed`.

    Every initialiser that takes a seed gets one derived from `seed` and the layer's position, so two calls with
    the same seed give the same weights and other seeds other weights (`keras.models.clone_model` alone would
    repeat the seeds a saved model's initialisers carry, or draw unseeded ones).

    Args:
        model: a functional or sequential Keras model.
        seed: the seed.

    Returns:
        The new model (BN moving statistics at their initial values).
    """
    position = iter(range(1, 1 << 30))

    def clone(layer):
        index = next(position)
        if isinstance(layer, keras.Model):
            return reseeded(layer, seed * 7919 + index)
        config = layer.get_config()
        for key, value in list(config.items()):
            if key.endswith("_initializer") and isinstance(value, dict) and "seed" in value.get("config", {}):
                value = copy.deepcopy(value)
                value["config"]["seed"] = (seed * 1_000_003 + index * 101 + len(key)) % (2**31 - 1)
                config[key] = value
        return layer.__class__.from_config(config)

    try:
        return keras.models.clone_model(model, clone_function=clone)
    except Exception as exc:  # noqa: BLE001 - a subclassed model cannot be cloned from its layers
        raise RecipeError(f"{KEY}: cannot re-initialise {model.name!r} from its layers ({_first_line(exc)}); build "
                          f"it with the functional or Sequential API, or give a factory "
                          f"package.module:function that takes the seed") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
