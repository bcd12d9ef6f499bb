"""resource_dict["submission_template"]: a site's own job script template
(jinja2, as executorlib's through pysqa), for batch jobs from outside any
allocation. The template's lines run in the job around pmp's command; pmp's
own options (its log, its name, the call's resources) win over the
template's. Against the real Slurm on loopback; Python runs without any
SLURM_* variable."""

import os
import subprocess
import sys
import textwrap

import pytest
from pmp import _pmp

OUTSIDE = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}

TEMPLATE = """#!/bin/bash
#SBATCH --comment=site-{{job_name}}
#SBATCH --output=/dev/null
{%- if run_time_max %}
#SBATCH --time={{ [1, run_time_max // 60]|max }}
{%- endif %}
export SITE_SETUP="cores={{cores}} cwd={{working_directory}}"
{{command}}
"""

SCRIPT = """
import os, sys
from pmp import Executor

def site(n=0):
    print("printed by the call")
    return os.environ.get("SITE_SETUP"), os.environ["SLURM_JOB_ID"]

template = open("template.sh").read()
with Executor(backend="slurm", cache_directory="store") as exe:
    f = exe.submit(site, resource_dict={"submission_template": template, "threads_per_core": 2,
                                        "run_time_max": 120})
    setup, job = f.result(timeout=120)
    print(setup)
    print(job == f.job)
    print(f.output.strip())
    for n, bad in enumerate(("#!/bin/sh\\necho no command\\n", "{% if %}", 7), 1):
        try:  # another argument each: a stored call would not need a job
            exe.submit(site, n, resource_dict={"submission_template": bad}).result(timeout=60)
        except ValueError as error:
            print(type(error).__name__, str(error).split(":")[0])
"""


@pytest.mark.timeout(300)
def test_a_site_template_runs_around_pmps_command_and_pmps_options_win(slurm, tmp_path):
    (tmp_path / "template.sh").write_text(TEMPLATE)
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, "script.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=OUTSIDE,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # The template's own line ran before the call, with pysqa's values.
    assert lines[0] == f"cores=2 cwd={tmp_path}", lines
    assert lines[1] == "True", lines
    # The template's --output=/dev/null lost to pmp's log, which the client reads.
    assert lines[2] == "printed by the call", lines
    assert lines[3] == (
        "ValueError submission_template must have {{command}} once, where pmp's command goes "
        "(a job of pmp's runs pmp-worker, with its environment), and it has it 0 times"
    ), lines
    assert (
        lines[4]
        == "ValueError resource_dict key 'submission_template' is not a valid jinja2 template"
    ), lines
    assert (
        lines[5]
        == "ValueError resource_dict key 'submission_template' must be a job script template (a str), got 7"
    ), lines


def test_flux_refuses_a_slurm_template_saying_what_to_do_instead():
    flux = _pmp.JobSystem("flux", "flux")
    said = flux.refuse({"cores": 1, "submission_template": "#!/bin/sh\n{{command}}\n"})
    assert said.startswith("resource_dict key 'submission_template' cannot be honoured on Flux")
    assert "command_line_argument_lst" in said
    assert (
        _pmp.JobSystem("slurm", "sbatch").refuse({"cores": 1, "submission_template": "x"}) is None
    )
