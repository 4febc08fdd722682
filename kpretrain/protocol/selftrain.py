"""Self-training stage: a fine-tuned teacher labels an unlabelled pool; a student learns from human plus pseudo
labels, then teaches the next round (Noisy Student; Zoph et al. 2020).  Never validation or test images."""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from kpretrain.data import image_batches, labelled_batches, target_batches
from kpretrain.errors import DataError
from kpretrain.models.heads import HeadedModel
from kpretrain.protocol.finetune import finetune
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.results import FinetuneResult
from kpretrain.recipe import Recipe, SelfTrainConfig
from kpretrain.training.timing import Clock, measure


@dataclasses.dataclass(frozen=True)
class Pool:
    """The unlabelled images (uint8) a teacher labels, their hidden labels (diagnostics only), and their source."""

    images: np.ndarray
    hidden_labels: np.ndarray | None
    source: str


def unlabelled_pool(cfg: SelfTrainConfig, inputs: SeedData) -> Pool:
    """The rest of the train split (neither validation nor the labelled subset), or `selftrain.unlabelled`'s train
    split; at most `selftrain.pool` images, a seeded sample."""
    data = inputs.data
    if cfg.unlabelled and cfg.unlabelled != inputs.recipe.data.dataset:
        other = inputs.pretrain_data[cfg.unlabelled]
        images, labels, source = other.x_train, other.y_train, cfg.unlabelled
    else:
        index = inputs.split.unlabelled
        images, labels, source = data.x_train[index], data.y_train[index], inputs.recipe.data.dataset
    if len(images) == 0:
        raise DataError("selftrain: the unlabelled pool is empty (every train image is labelled or held out); "
                        "set data.labels_per_class, or selftrain.unlabelled to another data set")
    limit = inputs.budget.cap(cfg.pool, inputs.budget.train_examples)
    if limit is not None and limit < len(images):
        keep = np.sort(np.random.default_rng(inputs.seed + 7).choice(len(images), limit, replace=False))
        images, labels = images[keep], labels[keep]
    return Pool(images, labels, source)


def teacher_probabilities(model: keras.Model, images: np.ndarray, batch_size: int, temperature: float) -> np.ndarray:
    """The teacher's class probabilities `[N, C]` (softmax of logits / temperature) on clean images, in batches."""
    logits = model.predict(image_batches(images, batch_size, shuffle=False, seed=0), verbose=0)
    return tf.nn.softmax(np.asarray(logits, np.float64) / temperature, axis=-1).numpy()


def select_pseudo_labels(probabilities: np.ndarray, *, threshold: float = 0.0, soft: bool = False,
                         balance: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, targets [k, C]) of the pseudo labels kept: top probability >= `threshold`; hard targets are
    one-hot rows of the top class, soft ones the probabilities.  `balance`: every class gets the mean count of
    the kept ones, its most confident examples first, classes with fewer repeated (seeded)."""
    p = np.asarray(probabilities, dtype=np.float64)
    top, predicted = p.max(axis=1), p.argmax(axis=1)
    kept = np.flatnonzero(top >= threshold)
    if balance and len(kept):
        classes = p.shape[1]
        per_class = int(round(len(kept) / classes))
        rng = np.random.default_rng(seed)
        chosen = []
        for c in range(classes):
            mine = kept[predicted[kept] == c]
            mine = mine[np.argsort(-top[mine], kind="stable")]
            if len(mine) >= per_class:
                chosen.append(mine[:per_class])
            elif len(mine):
                chosen.append(np.concatenate([mine, rng.choice(mine, per_class - len(mine))]))
        kept = np.sort(np.concatenate(chosen)) if chosen else kept[:0]
    targets = p[kept] if soft else np.eye(p.shape[1])[predicted[kept]]
    return kept, targets.astype(np.float32)


def soft_compile_kwargs() -> dict:
    """Loss on class distributions (human labels as one-hot rows), weighted per example; accuracy on their top."""
    return {"loss": keras.losses.CategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.CategoricalAccuracy(name="accuracy")]}


def student_batches(inputs: SeedData, images: np.ndarray, targets: np.ndarray, cfg: SelfTrainConfig, round_: int):
    """A function of the first batch number: endless batches of the labelled subset (weight 1) each joined by
    `ratio` x as many pseudo-labelled pool images (weight `selftrain.weight`; all of them when fewer)."""
    x, y = inputs.labelled
    classes, batch = inputs.data.num_classes, inputs.batch_size
    extra = min(int(round(cfg.ratio * min(batch, len(y)))), len(images))

    def human(start):
        return labelled_batches(x, y, batch, shuffle=True, seed=inputs.seed, start=start, repeat=True).map(
            lambda xb, yb: (xb, tf.one_hot(yb, classes), tf.ones([tf.shape(yb)[0]])))

    def train(start):
        if not extra:
            return human(start)
        pseudo = target_batches(images, targets, cfg.weight, extra, shuffle=True, seed=inputs.seed * 100 + round_ + 1,
                                start=start, repeat=True, drop_remainder=True)
        joined = tf.data.Dataset.zip(human(start), pseudo)
        return joined.map(lambda a, b: tuple(tf.concat([u, v], 0) for u, v in zip(a, b)),
                          num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    return train


def self_train(teacher: HeadedModel, arm: Recipe, inputs: SeedData, *, make_model: Callable[[str], HeadedModel],
               callbacks=(), clock: Clock | None = None, backup: Callable[[str], str | None] = lambda stage: None,
               ) -> tuple[HeadedModel, FinetuneResult, dict]:
    """Fine-tune `teacher` on the labelled subset, then `selftrain.rounds` times: label the pool with the teacher,
    fine-tune a student (`make_model(selftrain.student_init)`) on human + pseudo labels, the student becoming
    the next teacher.  Returns (last student, its fine-tuning, the record of every round)."""
    cfg = arm.selftrain
    pool = unlabelled_pool(cfg, inputs)
    taught = finetune(teacher, arm, inputs, callbacks=callbacks, clock=clock, backup=backup("teacher"))
    record = {"pool": len(pool.images), "pool_source": pool.source, "teacher_val_accuracy": taught.val_accuracy,
              "rounds": []}
    classes = inputs.data.num_classes
    student_arm = arm if cfg.student_augment is None else dataclasses.replace(
        arm, finetune=dataclasses.replace(arm.finetune, augment=cfg.student_augment))
    for round_ in range(cfg.rounds):
        with measure(clock, "evaluation"):
            probabilities = teacher_probabilities(teacher, pool.images, inputs.batch_size, cfg.temperature)
        kept, targets = select_pseudo_labels(probabilities, threshold=cfg.threshold, soft=cfg.labels == "soft",
                                             balance=cfg.balance, seed=inputs.seed + round_)
        top = targets.argmax(axis=1)
        entry = {"round": round_ + 1, "teacher_val_accuracy": taught.val_accuracy, "pseudo_labels": int(len(kept)),
                 "distinct_images": int(len(np.unique(kept))),
                 "per_class": np.bincount(top, minlength=classes).tolist()}
        if pool.hidden_labels is not None and pool.source == inputs.recipe.data.dataset:  # a diagnostic only
            right = top == pool.hidden_labels[kept]
            entry["pseudo_label_accuracy"] = float(right.mean()) if len(kept) else None
            entry["pseudo_label_accuracy_per_class"] = [
                float(right[top == c].mean()) if np.any(top == c) else None for c in range(classes)]
        student = make_model(cfg.student_init)
        taught = finetune(student, student_arm, inputs, callbacks=callbacks, clock=clock, backup=backup(f"student{round_ + 1}"),
                          train=student_batches(inputs, pool.images[kept], targets, cfg, round_),
                          compile_kwargs=soft_compile_kwargs())
        entry["student_val_accuracy"] = taught.val_accuracy
        record["rounds"].append(entry)
        teacher = student
    return teacher, taught, record
