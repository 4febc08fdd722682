"""Exported models: a backbone or a fine-tuned classifier as `<name>.keras` and a SavedModel `<name>/` (endpoint
`serve`, float32 images) with its `kpretrain.json`; `kpretrain export` builds them for any arm and seed of a run."""

from __future__ import annotations

import json
import os

import keras

from kpretrain.errors import InputError
from kpretrain.report import io


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


def pretrained_backbone(run_dir: str, metrics: dict, recipe, arm: str, seed: int) -> keras.Model:
    """`arm`'s backbone for `seed`, rebuilt from the recipe with the weights its pre-training unit recorded."""
    from kpretrain.models.backbones import create_backbone

    entry = metrics["arms"].get(arm) or {}
    if not entry.get("pretrain_unit"):
        with_one = [name for name, e in metrics["arms"].items() if e.get("pretrain_unit")]
        raise InputError(f"arm {arm!r}: no pre-trained backbone in {run_dir}; arms with one: "
                         f"{', '.join(with_one) or 'none'}")
    if seed not in entry["seeds"]:
        raise InputError(f"seed {seed}: arm {arm!r} of {run_dir} has seeds {entry['seeds']}")
    settings = recipe.arm_recipes()[arm].backbone
    backbone = create_backbone(settings.name, tuple(metrics["data"]["image_shape"]), seed=seed, **settings.options)
    unit = entry["pretrain_unit"][entry["seeds"].index(seed)]
    backbone.load_weights(os.path.join(run_dir, "units", f"{unit}.weights.h5"))
    return backbone


def export_run(run_dir: str, *, arm: str | None = None, seed: int | None = None, what: str = "backbone",
               out: str | None = None, log=print) -> list[str]:
    """Export `what` ('backbone' or 'classifier') of `arm` (default every arm that has one) and `seed` (default
    every seed) of a finished run into `out` (default `run_dir/backbones/` or `run_dir/classifiers/`), one
    `<arm>/seed<k>/` directory each; returns those directories."""
    from kpretrain.data import SCALING
    from kpretrain.models.backbones import block_names, create_backbone
    from kpretrain.models.heads import attach_head, create_head

    metrics, recipe = read_run(run_dir)
    arms = recipe.arm_recipes()
    has = {name: e for name, e in metrics["arms"].items() if what == "classifier" or e.get("pretrain_unit")}
    if arm is not None and arm not in has:
        raise InputError(f"--arm {arm!r}: no {what} to export in {run_dir}; arms with one: {', '.join(has) or 'none'}")
    shape = tuple(metrics["data"]["image_shape"])
    written = []
    for name in [arm] if arm is not None else list(has):
        entry = has[name]
        seeds = entry["seeds"] if seed is None else [seed]
        for k in seeds:
            if k not in entry["seeds"]:
                raise InputError(f"--seed {k}: arm {name!r} of {run_dir} has seeds {entry['seeds']}")
            settings = arms[name]
            backbone = (pretrained_backbone(run_dir, metrics, recipe, name, k) if what == "backbone" else
                        create_backbone(settings.backbone.name, shape, seed=k, **settings.backbone.options))
            info = {"arm": name, "seed": k, "backbone": settings.backbone.name, "options": settings.backbone.options,
                    "blocks": block_names(backbone), "input_shape": [None, *shape], "input_dtype": "float32",
                    "scaling": SCALING, "endpoint": "serve", "recipe": recipe.to_dict(),
                    "data": metrics["data"], "kpretrain_version": metrics.get("kpretrain_version")}
            if what == "backbone":
                unit = entry["pretrain_unit"][entry["seeds"].index(k)]
                model, info = backbone, {**info, "feature_dim": int(backbone.output_shape[-1]), "pretrain_unit": unit}
            else:
                weights = os.path.join(run_dir, "units", f"seed{k}.{name}.finetune.weights.h5")
                if not os.path.exists(weights):
                    raise InputError(f"{weights}: missing (runs before kpretrain 0.4.0 kept no fine-tuned weights); "
                                     f"run the recipe again to export its classifiers")
                head = create_head(settings.finetune.head, backbone.output_shape[-1], metrics["data"]["num_classes"],
                                   seed=k, name="downstream_head")
                headed = attach_head(backbone, head)
                headed.load_weights(weights)
                # a plain functional model from the image tensor (not a one-element list) to the logits
                model = keras.Model(headed.input, headed.output, name="classifier")
                info = {**info, "classes": metrics["data"]["class_names"], "outputs": "logits",
                        "test_accuracy": entry["test_accuracy"][entry["seeds"].index(k)]}
            model.trainable = True
            directory = os.path.join(out or os.path.join(run_dir, f"{what}s"), name, f"seed{k}")
            save_model(model, directory, what, info)
            log(f"exported {what} of arm {name}, seed {k}: {directory}/{what}.keras and {directory}/{what}/")
            written.append(directory)
    return written
