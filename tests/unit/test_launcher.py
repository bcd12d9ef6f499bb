"""The `launcher` parameter: node agents or a step per worker inside an
allocation. The scheduler's plan decides (`_pmp.make_plan`,
`_pmp.choose_launcher`); the client checks the value and words the plan's
refusal of a launcher given where there is no allocation to start in."""

import pytest
from pmp import Executor, _pmp
from pmp.client.executor_checks import refusal_message


def choose(backend, in_allocation, launcher=None, pilots=False):
    return _pmp.choose_launcher(backend, in_allocation, launcher, pilots)


def test_agents_where_they_can_start_unless_steps_are_asked_for():
    assert _pmp.LAUNCHERS == ["agent", "step"]
    for backend in ("slurm", "flux"):
        assert choose(backend, True, "step") == "step"
        assert choose(backend, False) == "step", "outside any allocation: jobs of their own"
        assert choose(backend, True) == "agent"
        assert choose(backend, True, "agent") == "agent"
    assert choose("local", False) == "agent", "one agent on this host"
    # A pool outside any allocation: pilot jobs of node agents, or one job per worker.
    assert choose("slurm", False, pilots=True) == "agent"
    assert choose("slurm", False, "step", pilots=True) == "step"


def plan(backend, *, pilots=False, in_allocation=True, launcher=None):
    return _pmp.make_plan(
        backend=backend,
        pilots=pilots,
        max_workers=2,
        max_cores=None,
        block_allocation=pilots,
        worker=_pmp.ResourceRequest(),
        allocation_cores=4,
        step_cpus=None,
        cpu_count=4,
        gpu_devices=[],
        gpu_count=0,
        in_allocation=in_allocation,
        launcher=launcher,
    )


def test_the_plan_carries_the_launcher_the_scheduler_is_configured_with():
    assert plan("slurm").launcher == "agent"
    assert plan("flux", launcher="step").launcher == "step"
    assert plan("slurm", pilots=True, in_allocation=False).launcher == "agent"
    pilot_per_worker = plan("slurm", pilots=True, in_allocation=False, launcher="step")
    assert pilot_per_worker.launcher == "step"
    assert plan("local", in_allocation=False).launcher == "agent"


@pytest.mark.parametrize(
    ("backend", "pilots", "in_allocation", "where"),
    [
        ("local", False, False, "the local backend starts every worker on this machine itself"),
        ("slurm", False, False, "this slurm executor runs outside any"),
    ],
)
def test_a_launcher_where_there_is_no_allocation_is_refused_and_worded(
    backend, pilots, in_allocation, where
):
    refused = plan(backend, pilots=pilots, in_allocation=in_allocation, launcher="step")
    assert (refused.kind, refused.setting, refused.backend) == ("launcher_unused", "step", backend)
    message = refusal_message(refused, _pmp.ResourceRequest(), None, backend, [], {})
    assert message.startswith(
        "launcher='step' chooses how srun or flux start workers inside a Slurm allocation "
        "or a Flux instance, and "
    )
    assert where in message
    assert "drop launcher" in message
    assert choose(backend, in_allocation, "step").kind == "launcher_unused"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("srun", ValueError),
        ("Agent", ValueError),
        ("", ValueError),
        (1, TypeError),
        (True, TypeError),
    ],
)
def test_a_bad_launcher_names_the_parameter_the_values_and_what_each_does(value, error):
    with pytest.raises(error) as raised:
        Executor(launcher=value)
    message = str(raised.value)
    assert message.startswith(
        f"launcher must be None (the backend's default), 'agent' or 'step', got {value!r}. "
    )
    assert "'agent': one node agent per node of the allocation" in message
    assert "'step': one srun step or flux job per worker" in message


def test_a_launcher_on_the_local_backend_is_refused_before_anything_starts():
    for launcher in ("agent", "step"):
        with pytest.raises(ValueError, match=f"^launcher='{launcher}' chooses how srun") as raised:
            Executor(backend="local", launcher=launcher)
        assert "the local backend starts every worker on this machine itself" in str(raised.value)
