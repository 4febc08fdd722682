"""The plan of a run: what `kpretrain run --dry-run` prints and every run prints before it trains."""

from __future__ import annotations

from kpretrain.experiment.preparation import Prepared
from kpretrain.models.backbones import block_names
from kpretrain.models.freezing import resolve_depth
from kpretrain.pretext import LABELLED_TASKS, SYNTHETIC_TASKS
from kpretrain.protocol.finetune import finetune_steps_per_epoch
from kpretrain.recipe import Recipe, pretrains, transfers


def plan_lines(prepared: Prepared) -> list[str]:
    """The plan as lines: data, splits, each arm with its stages, the runtime and the evaluation.

    Args:
        prepared: the run's `Prepared` (from `prepare`).

    Returns:
        The lines, without newlines.

    Example:
        >>> print("\\n".join(plan_lines(prepare(recipe, smoke=True))))
        recipe fashion_overlay: 2 arms x 3 seeds [0, 1, 2] [smoke: at most 3 batches x 1 epoch per stage]
        ...
    """
    r, d, budget = prepared.recipe, prepared.data, prepared.budget
    split = prepared.first.split
    lines = [
        f"recipe {r.name}: {len(prepared.arms)} arms x {len(r.seeds)} seeds {r.seeds}"
        + (f" [smoke: at most {budget.steps_per_epoch} batches x {budget.epochs} epoch per stage]"
           if prepared.smoke else ""),
        f"data {d.name} from {d.source}: train {len(d.y_train)}, test {len(d.y_test)}, image {d.image_shape}, "
        f"{d.num_classes} classes",
        f"split per seed: labelled {len(split.labelled)}, validation {len(split.validation)}, "
        f"unlabelled pool {len(split.unlabelled)}",
    ]
    for name, arm in prepared.arms.items():
        lines.append(_arm_line(prepared, name, arm))
    return lines + _compute_lines(prepared) + _runtime_lines(prepared)


def _arm_line(prepared: Prepared, name: str, arm: Recipe) -> str:
    """`  arm <name>: <backbone> [<blocks>] -> <stage> -> ... (compared with <baseline>)`."""
    backbone = prepared.initial[name]
    blocks = block_names(backbone)
    depth = resolve_depth(backbone, arm.transfer.frozen_depth) if blocks else arm.transfer.frozen_depth
    stages = [f"load {arm.backbone.from_}"] if arm.backbone.from_ else []
    if pretrains(arm):
        stages.append(_pretrain_stage(prepared, name, arm))
    if not transfers(arm):
        stages.append("random init")
    t = arm.transfer
    stages.append(f"transfer: init {t.init}, freeze {depth}/{len(blocks) or '?'} blocks, bn {t.bn}"
                  + (f", unfreeze every {t.unfreeze.every} (backbone lr x{t.unfreeze.backbone_lr_factor:g})"
                     if t.unfreeze else "")
                  + (f", head init {t.head_init}" if t.head_init != "none" else ""))
    augment = f", {arm.finetune.augment} augmentation" if arm.finetune.augment != "none" else ""
    epochs = prepared.budget.cap(arm.finetune.epochs, prepared.budget.epochs)
    extra = prepared.extra_steps(name, prepared.recipe.seeds[0])
    stages.append(f"fine-tune {arm.finetune.head} head for {epochs} epoch{'' if epochs == 1 else 's'}"
                  f"{f' + {extra} steps' if extra else ''} on {len(prepared.first.split.labelled)} labelled{augment}")
    if arm.selftrain is not None:
        stages.append(_selftrain_stage(arm))
    compared = [prepared.pairs.get(name), prepared.compute_pairs.get(name)]
    pair = f" (compared with {' and '.join(c for c in compared if c)})" if any(compared) else ""
    architecture = prepared.architectures[name]
    found = ", ".join(f"{block} ({layers} layers)" for block, layers in architecture["blocks"])
    return (f"  arm {name}: {architecture['name']} ({architecture['parameters']:,} parameters) [{found}] -> "
            + " -> ".join(stages) + pair)


def _pretrain_stage(prepared: Prepared, name: str, arm: Recipe) -> str:
    """The pre-training stage: task, images and epochs, or the arm whose pre-trained weights it shares."""
    r, split = prepared.recipe, prepared.first.split
    source = arm.pretrain.dataset or r.data.dataset
    n = len(split.labelled) + len(split.unlabelled) if source == r.data.dataset else len(
        prepared.pretrain_data[source].y_train)
    epochs = prepared.budget.cap(arm.pretrain.epochs, prepared.budget.epochs)
    labels = "with its labels" if arm.pretrain.task in LABELLED_TASKS else "labels unused"
    images = f"{source} ({n} images, {labels})"
    if arm.pretrain.task in SYNTHETIC_TASKS:
        per_epoch = arm.pretrain.options.get("images_per_epoch") or n
        images = f"generated images ({per_epoch} per epoch, no data read)"
    first = prepared.pretraining_arm(arm)
    return (f"pretrain {arm.pretrain.task} on {images} for {epochs:g} epoch{'' if epochs == 1 else 's'}"
            if first == name else f"pre-trained weights shared with {first}")


def _compute_lines(prepared: Prepared) -> list[str]:
    """`  scratch_compute: scratch + N steps (the pre-training of <arm>)` per compute-matched scratch (first seed)."""
    if "scratch_compute" in prepared.recipe.baselines and not prepared.compute:
        return ["  scratch_compute: no arm pre-trains, so there is no compute-matched scratch to run"]
    lines = []
    for name, match in prepared.compute.items():
        extra = prepared.extra_steps(name, prepared.recipe.seeds[0])
        per_epoch = finetune_steps_per_epoch(prepared.arms[name], prepared.first)
        lines.append(f"  {name}: {match.extends or f'the matched scratch of {match.arms[0]}'} + {extra} steps (the "
                     f"pre-training of {', '.join(match.arms)}), {extra / per_epoch:.3g} more fine-tuning epochs of "
                     f"{per_epoch} steps")
    return lines


def _selftrain_stage(arm: Recipe) -> str:
    st = arm.selftrain
    teacher = "fine-tuned model" if st.teacher_init == "pretrained" else "same from scratch"
    return (f"self-train {st.rounds} round{'s' * (st.rounds > 1)}: the {teacher} "
            f"labels the pool ({st.unlabelled or 'unlabelled rest of train'}; {st.labels}, "
            f"threshold {st.threshold:g}{', balanced' if st.balance else ''}), a student from "
            f"{st.student_init} learns labelled + {st.ratio:g}x pseudo-labelled per batch"
            + (f", {st.student_augment} augmentation" if st.student_augment else ""))


def _runtime_lines(prepared: Prepared) -> list[str]:
    """Op determinism and the evaluation protocol."""
    r = prepared.recipe
    rt = r.runtime
    lines = ["runtime: op determinism on (reruns identical)" if rt.op_determinism else
             "runtime: op determinism off" + (" because runtime.jit_compile is on (XLA is off under op "
                                               "determinism)" if rt.deterministic is None else "")
             + ": reruns may differ slightly"]
    if rt.threads:
        lines[0] += f"; {rt.threads} intra-op thread{'s' * (rt.threads > 1)} per process (runtime.threads)"
    ev = r.evaluation
    every = "every epoch" if ev.validate_every == 1 else f"every {ev.validate_every} epochs and the last"
    lines.append(f"evaluation: validation {every}, " + (
        f"BN statistics refreshed on training batches; raw (stale BN) accuracy "
        f"{'at every validation' if ev.raw == 'every_epoch' else 'at the last epoch'} and on test"
        if ev.bn_refresh else "BN refresh off"))
    return lines
