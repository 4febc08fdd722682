"""The second half of test_interactions.py's covering array: its rows run here, in a file of their own, so that
`pytest -n 2 --dist loadfile` can run the two halves on two workers; the checks are test_interactions.py's."""

import pytest

from tests.test_interactions import (SECOND_HALF, check_a_kept_pretraining_checkpoint_is_named_in_passes_over_the_data,
                                     check_a_zero_backbone_learning_rate_leaves_the_backbone_unchanged,
                                     check_raw_numbers_are_measured_with_the_statistics_training_left,
                                     check_recorded_numbers_are_those_of_the_kept_model, run_rows)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The second half of the array's rows, run."""
    return run_rows(SECOND_HALF, tmp_path_factory.mktemp("interactions_b"))


def test_recorded_numbers_are_those_of_the_kept_model(runs):
    check_recorded_numbers_are_those_of_the_kept_model(runs)


def test_raw_numbers_are_measured_with_the_statistics_training_left(runs):
    check_raw_numbers_are_measured_with_the_statistics_training_left(runs)


def test_a_zero_backbone_learning_rate_leaves_the_backbone_unchanged(runs):
    check_a_zero_backbone_learning_rate_leaves_the_backbone_unchanged(runs)


def test_a_kept_pretraining_checkpoint_is_named_in_passes_over_the_data(runs):
    check_a_kept_pretraining_checkpoint_is_named_in_passes_over_the_data(runs)
