"""A batch job's state as a display says it (`pmp.client.job_states`)."""

import pytest
from pmp.client.job_states import ENDED, ENDED_WORDS, describe


@pytest.mark.parametrize(
    ("state", "reason", "nodes", "said"),
    [
        ("PENDING", "Priority", "", "PENDING (Priority)"),
        ("PENDING", "None", "", "PENDING"),
        ("PENDING", "", "", "PENDING"),
        ("RUNNING", "None", "node[1-2]", "RUNNING on node[1-2]"),
        ("RUNNING", "None", "", "RUNNING"),
        ("COMPLETED", "None", "node1", "COMPLETED"),
    ],
)
def test_a_state_is_said_with_why_it_waits_or_where_it_runs(state, reason, nodes, said):
    assert describe(state, reason, nodes) == said


def test_only_ended_states_have_words_for_how_a_job_ended_and_no_live_state_is_ended():
    assert set(ENDED_WORDS) <= ENDED - {"COMPLETED"}
    assert not {"PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "COMPLETING"} & ENDED
