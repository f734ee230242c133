"""A failing blocking check puts its reasons — the numbers — in the error a user reads.

``assets.metadata.check_result`` is what every blocking check returns; Dagster's own error for
a failed blocking check names the check only, so the helper records the failed evaluation
(with its metadata) and then fails the step with the reasons.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from assets.metadata import MAX_REASONS, check_result

REPO = Path(__file__).resolve().parents[1]
REASON = "train share 0.6012 is more than 3.71% from 0.8000"


@dg.asset
def table() -> None:
    """Stands in for a published table."""


@dg.asset(deps=[table])
def downstream() -> None:
    """Must not run when the blocking check fails."""


@dg.asset_check(asset=table, blocking=True, description="Stands in for a blocking check.")
def table_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return check_result([REASON, "3 (user, item) pairs appear in more than one part (leak)"],
                        share_train=0.6012)


@dg.asset_check(asset=table, blocking=True)
def table_fine(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return check_result([], share_train=0.8)


@dg.asset_check(asset=table, blocking=False)
def table_advisory(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return check_result([REASON])


def _run(*checks, raise_on_error: bool = False) -> dg.ExecuteInProcessResult:
    return dg.materialize([table, downstream, *checks], raise_on_error=raise_on_error,
                          instance=dg.DagsterInstance.ephemeral())


def _evaluation(result: dg.ExecuteInProcessResult, name: str):
    [evaluation] = [e.event_specific_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"
                    and e.event_specific_data.check_name == name]
    return evaluation


def test_a_failing_blocking_check_fails_its_step_with_the_numbers_and_blocks_downstream():
    result = _run(table_valid)

    assert not result.success
    assert not result.asset_materializations_for_node("downstream")  # still blocked
    # the evaluation is recorded as a failed check, with its metadata and the reasons
    evaluation = _evaluation(result, "table_valid")
    assert not evaluation.passed and evaluation.blocking
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["share_train"].value == 0.6012
    assert REASON in evaluation.metadata["problems"].value and REASON in evaluation.description
    # what the event log (and `dagster job execute`) shows for the check and for the step
    messages = "\n".join(e.message or "" for e in result.all_events)
    assert f"did not pass. Description: '- {REASON}" in messages
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    shown = failure.step_failure_data.error_display_string
    assert "blocking check table: table_valid failed" in shown and REASON in shown
    assert "more than one part (leak)" in shown
    assert failure.step_failure_data.user_failure_data.metadata["share_train"].value == 0.6012


def test_in_process_with_raise_on_error_raises_the_reasons():
    with pytest.raises(dg.Failure, match=r"train share 0\.6012 is more than 3\.71%"):
        _run(table_valid, raise_on_error=True)


def test_passing_and_non_blocking_checks_do_not_fail_the_step():
    result = _run(table_fine, table_advisory)
    assert result.success and result.asset_materializations_for_node("downstream")
    assert _evaluation(result, "table_fine").passed
    advisory = _evaluation(result, "table_advisory")
    assert not advisory.passed and REASON in advisory.description


def test_outside_a_running_check_a_plain_result_with_a_capped_description():
    many = [f"problem {k}" for k in range(MAX_REASONS + 5)]
    result = check_result(many, n=1)
    assert isinstance(result, dg.AssetCheckResult) and not result.passed
    assert result.description.count("\n- problem") == MAX_REASONS - 1
    assert "and 5 more" in result.description
    assert "problem 24" in result.metadata["problems"].value  # the metadata lists them all
    assert check_result([]).passed and check_result([]).description is None


def test_dagster_job_execute_prints_the_reasons(tmp_path):
    """What a CLI user reads: the step failure carries the numbers."""
    module = tmp_path / "defs_with_a_failing_check.py"
    module.write_text(textwrap.dedent(f"""
        import dagster as dg
        from assets.metadata import check_result

        @dg.asset
        def table() -> None: ...

        @dg.asset(deps=[table])
        def downstream() -> None: ...

        @dg.asset_check(asset=table, blocking=True)
        def table_valid(context) -> dg.AssetCheckResult:
            return check_result([{REASON!r}])

        defs = dg.Definitions(assets=[table, downstream], asset_checks=[table_valid],
                              jobs=[dg.define_asset_job("all", selection="*")])
        """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-f", str(module), "-j", "all"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "dagster._core.definitions.events.Failure: blocking check table: table_valid failed" in output
    assert f"- {REASON}" in output
    assert REASON in output.split("RUN_FAILURE", 1)[1]  # the run's failure repeats it
    assert 'Started execution of step "downstream"' not in output  # blocked
