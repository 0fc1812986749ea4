"""The alert rules: promtool accepts them, and promtool's unit tests (sample series per alert) pass."""

from pathlib import Path
from typing import Any

import yaml

from tests.helpers.deploytools import RULE_TESTS, RULES, run, tool

REQUIRED_ALERTS = {
    "PeachTaskFailingRepeatedly",  # task failing repeatedly
    "PeachTaskNotSucceeding",  # not succeeded for N x its usual interval
    "PeachTaskTimedOut",  # timeouts
    "PeachLoopStalled",  # loop stalled
    "PeachRepositorySyncFailing",  # repository sync failing
    "PeachSchedulerDown",  # up == 0
    "PeachSchedulerAbsent",  # no target at all
}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def unit_tests() -> list[dict[str, Any]]:
    return [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def test_promtool_check_rules() -> None:
    proc = run(tool("promtool"), "check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = run(tool("promtool"), "test", "rules", RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    alerts = {rule["alert"] for rule in rules()}
    assert alerts >= REQUIRED_ALERTS
    fired = {case["alertname"] for case in unit_tests() if case["exp_alerts"]}
    quiet = {case["alertname"] for case in unit_tests() if not case["exp_alerts"]}
    assert fired == alerts, f"alerts never shown firing: {sorted(alerts - fired)}"
    assert quiet == alerts, f"alerts never shown staying quiet: {sorted(alerts - quiet)}"


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_a_wrong_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests against rules with one threshold changed."""
    text = RULES.read_text(encoding="utf-8")
    assert text.count("[6h])) >= 3") == 1
    (tmp_path / "rules.yaml").write_text(text.replace("[6h])) >= 3", "[6h])) >= 30"), encoding="utf-8")
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    tests["rule_files"] = ["rules.yaml"]
    tests["tests"] = tests["tests"][:1]  # the PeachTaskFailingRepeatedly history
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    proc = run(tool("promtool"), "test", "rules", tmp_path / "tests.yaml")
    assert proc.returncode != 0
    assert "PeachTaskFailingRepeatedly" in proc.stdout + proc.stderr
