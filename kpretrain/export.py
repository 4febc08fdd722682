"""Exported models: a backbone or a fine-tuned classifier as `<name>.keras` and a SavedModel `<name>/` (endpoint
`serve`, float32 images) with its `kpretrain.json`; `kpretrain export` builds them for any arm and seed of a run."""

from __future__ import annotations

import json
import os

import keras

from kpretrain.errors import InputError
from kpretrain import io


def save_model(model: keras.Model, directory: str, name: str, info: dict) -> dict:
    """`directory/<name>.keras` and the SavedModel `directory/<name>/` with `kpretrain.json`, written atomically.

    The SavedModel's `serve` takes the image tensor itself (a model whose inputs are a one-element list would
    otherwise be exported with a list signature, which `TFSMLayer`, `serve(x)` and TFLite cannot bind)."""
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    with io.atomic_path(os.path.join(directory, f"{name}.keras")) as tmp:
        model.save(tmp)
    (images,) = model.inputs
    signature = [tf.TensorSpec(images.shape, images.dtype, name="images")]
    with io.atomic_path(os.path.join(directory, name)) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False, input_signature=signature)
        with open(os.path.join(tmp, "kpretrain.json"), "w") as fh:
            json.dump(info, fh, indent=2)
    return {"keras": f"{name}.keras", "saved_model": f"{name}/"}


def read_run(run_dir: str):
    """(metrics, recipe) of a finished run directory (a sweep's point directory for a sweep), or a one-line
    InputError saying what to pass."""
    from kpretrain.recipe import load_recipe

    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(metrics_path) or not os.path.exists(os.path.join(run_dir, "recipe.yaml")):
        raise InputError(f"{run_dir}: no metrics.json and recipe.yaml; pass a run directory written by kpretrain run "
                         f"(for a sweep, one of its point directories)")
    metrics = io.read_json(metrics_path)
    if "points" in metrics:
        raise InputError(f"{run_dir} is a sweep; pass one of its points: "
                         + ", ".join(os.path.join(run_dir, p["dir"]) for p in metrics["points"]))
    return metrics, load_recipe(os.path.join(run_dir, "recipe.yaml"))


def architecture(settings, shape: tuple, seed: int) -> keras.Model:
    """An arm's backbone before any stage: loaded from `backbone.from`, or the named backbone with seeded weights.

    Args:
        settings: the arm's `backbone` section (a `BackboneConfig`).
        shape: the image shape (height, width, channels) the run trained on.
        seed: the seed of the fresh weights (unused for `backbone.from`).

    Returns:
        A Keras model (the weights are replaced by a unit's when it is rebuilt from a run).
    """
    from kpretrain.models.backbones import configured_backbone
    from kpretrain.models.loading import load_backbone

    if settings.from_:
        return load_backbone(settings.from_, shape)[0]
    return configured_backbone(settings, shape, seed=seed)


def pretrained_backbone(run_dir: str, metrics: dict, recipe, arm: str, seed: int) -> keras.Model:
    """`arm`'s backbone for `seed`, rebuilt from the recipe with the weights its pre-training unit recorded."""
    from kpretrain.experiment.units import UnitStore

    entry = metrics["arms"].get(arm) or {}
    if not entry.get("pretrain_unit"):
        with_one = [name for name, e in metrics["arms"].items() if e.get("pretrain_unit")]
        raise InputError(f"arm {arm!r}: no pre-trained backbone in {run_dir}; arms with one: "
                         f"{', '.join(with_one) or 'none'}")
    if seed not in entry["seeds"]:
        raise InputError(f"seed {seed}: arm {arm!r} of {run_dir} has seeds {entry['seeds']}")
    backbone = architecture(recipe.arm_recipes()[arm].backbone, tuple(metrics["data"]["image_shape"]), seed)
    backbone.load_weights(UnitStore(run_dir).weights(entry["pretrain_unit"][entry["seeds"].index(seed)]))
    return backbone


def model_card(metrics: dict, recipe, arm: str, seed: int, backbone: keras.Model) -> dict:
    """What `kpretrain.json` says of every exported model: arm, seed, architecture, its blocks, the input it takes
    (shape, dtype, scaling), the endpoint, the data it was trained on, the recipe and the version that wrote it."""
    from kpretrain.data import SCALING
    from kpretrain.models.backbones import block_names

    settings = recipe.arm_recipes()[arm]
    return {"arm": arm, "seed": seed, "backbone": settings.backbone.name, "options": settings.backbone.options,
            "blocks": block_names(backbone), "block_patterns": settings.backbone.blocks, "input_shape": [None, *metrics["data"]["image_shape"]],
            "input_dtype": "float32", "scaling": SCALING, "endpoint": "serve", "recipe": recipe.to_dict(),
            "data": metrics["data"], "kpretrain_version": metrics.get("kpretrain_version")}


def export_backbone(run_dir: str, metrics: dict, recipe, arm: str, seed: int, directory: str) -> dict:
    """Write `arm`'s pre-trained backbone of `seed` as `directory/backbone.keras` and the SavedModel
    `directory/backbone/` with its `kpretrain.json`; returns {"keras": ..., "saved_model": ...} (relative names)."""
    backbone = pretrained_backbone(run_dir, metrics, recipe, arm, seed)
    backbone.trainable = True
    entry, pre = metrics["arms"][arm], recipe.arm_recipes()[arm].pretrain
    info = {**model_card(metrics, recipe, arm, seed, backbone), "feature_dim": int(backbone.output_shape[-1]),
            "pretrain_unit": entry["pretrain_unit"][entry["seeds"].index(seed)],
            "pretrain": {"task": pre.task, "options": pre.options, "epochs": pre.epochs,
                         "dataset": pre.dataset or recipe.data.dataset}}
    return save_model(backbone, directory, "backbone", info)


def export_classifier(run_dir: str, metrics: dict, recipe, arm: str, seed: int, directory: str) -> dict:
    """Write `arm`'s fine-tuned classifier of `seed` (images in, logits out) as `directory/classifier.keras` and the
    SavedModel `directory/classifier/` with its `kpretrain.json`."""
    from kpretrain.experiment.units import UnitStore, finetune_unit
    from kpretrain.models.heads import attach_head, create_head

    weights = UnitStore(run_dir).weights(finetune_unit(seed, arm))
    if not os.path.exists(weights):
        raise InputError(f"{weights}: missing (runs before kpretrain 0.4.0 kept no fine-tuned weights); "
                         f"run the recipe again to export its classifiers")
    settings, data = recipe.arm_recipes()[arm], metrics["data"]
    backbone = architecture(settings.backbone, tuple(data["image_shape"]), seed)
    head = create_head(settings.finetune.head, backbone.output_shape[-1], data["num_classes"], seed=seed,
                       name="downstream_head")
    headed = attach_head(backbone, head)
    headed.load_weights(weights)
    # a plain functional model from the image tensor (not a one-element list) to the logits
    model = keras.Model(headed.input, headed.output, name="classifier")
    model.trainable = True
    entry = metrics["arms"][arm]
    info = {**model_card(metrics, recipe, arm, seed, backbone), "classes": data["class_names"], "outputs": "logits",
            "test_accuracy": entry["test_accuracy"][entry["seeds"].index(seed)]}
    return save_model(model, directory, "classifier", info)


def export_run(run_dir: str, *, arm: str | None = None, seed: int | None = None, what: str = "backbone",
               out: str | None = None, log=print) -> list[str]:
    """Export the backbone or the classifier of any arm and seed of a finished run.

    Args:
        run_dir: a finished run directory (a sweep's point directory for a sweep).
        arm: the arm; None: every arm that has one (every arm for classifiers, pre-trained arms for backbones).
        seed: the seed; None: every seed of the arm.
        what: "backbone" (the pre-trained backbone) or "classifier" (the fine-tuned model).
        out: where the `<arm>/seed<k>/` directories go; None: `run_dir/backbones/` (or `classifiers/`).
        log: where each exported directory is announced.

    Returns:
        The directories written.

    Raises:
        InputError: not a finished run, or an arm or seed without such a model.

    Example:
        >>> export_run("runs/fashion_overlay/20261127T201500Z", arm="overlay", seed=0)
        ['runs/fashion_overlay/20261127T201500Z/backbones/overlay/seed0']
    """
    metrics, recipe = read_run(run_dir)
    has = {name: e for name, e in metrics["arms"].items() if what == "classifier" or e.get("pretrain_unit")}
    if arm is not None and arm not in has:
        raise InputError(f"--arm {arm!r}: no {what} to export in {run_dir}; arms with one: {', '.join(has) or 'none'}")
    write = export_backbone if what == "backbone" else export_classifier
    written = []
    for name in [arm] if arm is not None else list(has):
        seeds = has[name]["seeds"] if seed is None else [seed]
        for k in seeds:
            if k not in has[name]["seeds"]:
                raise InputError(f"--seed {k}: arm {name!r} of {run_dir} has seeds {has[name]['seeds']}")
            directory = os.path.join(out or os.path.join(run_dir, f"{what}s"), name, f"seed{k}")
            write(run_dir, metrics, recipe, name, k, directory)
            log(f"exported {what} of arm {name}, seed {k}: {directory}/{what}.keras and {directory}/{what}/")
            written.append(directory)
    return written
