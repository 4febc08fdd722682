"""The protocol: one module per stage (pretrain, transfer, finetune, evaluate), typed results, and `run_unit`,
the one function that orders them for a unit (seed x arm); `kpretrain run` and tuner trials both call it."""

from kpretrain.protocol.evaluate import evaluate_test, knn_test_accuracy
from kpretrain.protocol.finetune import finetune
from kpretrain.protocol.inputs import FULL, SMOKE, Budget, SeedData
from kpretrain.protocol.pretrain import pretrain, pretraining_key
from kpretrain.protocol.results import FinetuneResult, PretrainResult, TestResult, TransferResult, UnitResult
from kpretrain.protocol.transfer import transfer
from kpretrain.protocol.unit import build_model, initial_backbone, run_unit

__all__ = ["Budget", "FULL", "SMOKE", "SeedData", "pretrain", "pretraining_key", "transfer", "finetune",
           "evaluate_test", "knn_test_accuracy", "build_model", "initial_backbone", "run_unit", "PretrainResult",
           "TransferResult", "FinetuneResult", "TestResult", "UnitResult"]
