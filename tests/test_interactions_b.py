"""The second half of test_interactions.py's covering array: its rows run here, in a file of their own, so that
`pytest -n 2 --dist loadfile` can run the two halves on two workers; the four tests over the rows are
test_interactions.py's, imported."""

import pytest

from tests.test_interactions import (  # noqa: F401 - the imported tests run here, on this file's `runs`
    SECOND_HALF, run_rows, test_a_kept_pretraining_checkpoint_is_named_in_passes_over_the_data,
    test_a_zero_backbone_learning_rate_leaves_the_backbone_unchanged,
    test_raw_numbers_are_measured_with_the_statistics_training_left, test_recorded_numbers_are_those_of_the_kept_model)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The second half of the array's rows, run."""
    return run_rows(SECOND_HALF, tmp_path_factory.mktemp("interactions_b"))
