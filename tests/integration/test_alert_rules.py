"""The alert rules and the dashboard in deploy/ (issue #35): promtool checks the rules and runs their unit tests
(each rule firing and not firing, its annotations rendered), and every metric they name is one Coffer exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from shared.metrics import REGISTRY, SERVICE_GAUGES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "coffer-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "coffer-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "coffer.json"
#: what Prometheus adds itself, beside Coffer's own series
PROMETHEUS_OWN = {"up"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is Debian's prometheus package: make peers installs it"
    return subprocess.run([tool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60)


def exposed() -> set[str]:
    """Every series name Coffer's registry can expose (a histogram's _bucket/_count/_sum, a counter's _total)."""
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update({f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum", "_created")})
    return names


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\[[^]]*\]", "", re.sub(r"\{[^}]*\}", "", expr))  # no labels, no ranges
    functions_and_keywords = {"sum", "by", "rate", "max", "min", "topk", "histogram_quantile", "increase", "le",
                              "route", "service", "code", "instance", "bus", "trigger", "outcome", "min_over_time"}
    return {n for n in re.findall(r"[a-z_][a-z0-9_]*", without_labels)} - functions_and_keywords


def test_promtool_checks_the_rules_and_their_tests_pass() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_rule_is_tested_firing_and_quiet() -> None:
    rules = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    assert {"CofferServiceDown", "CofferOutboxBacklog", "CofferWebhookDeliveriesFailing", "CofferRpcTimeouts",
            "CofferCertificatesExpiring", "CofferLeaseRevocationsFailing"} <= set(rules)
    for rule in rules:
        mine = [c for c in cases if c["alertname"] == rule]
        assert any(c["exp_alerts"] for c in mine), f"{rule} never fires in the tests"
        assert any(not c["exp_alerts"] for c in mine), f"{rule} is never shown quiet in the tests"


def test_the_rules_and_the_dashboard_name_only_metrics_coffer_exposes() -> None:
    known = exposed() | PROMETHEUS_OWN
    assert set(SERVICE_GAUGES) <= known
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    targets = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert targets and rules
    for expr in rules + targets:
        unknown = metric_names(expr) - known
        assert not unknown, f"{expr}: {unknown} are not Coffer's metrics"
    used = set().union(*(metric_names(e) for e in rules + targets))
    assert set(SERVICE_GAUGES) <= used, "every service gauge is on the dashboard or in a rule"
