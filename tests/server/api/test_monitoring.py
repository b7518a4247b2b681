"""The alert rules and the Grafana dashboard: valid for promtool, and every metric they name is
one a real node exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.server.server_process import TOKENS, ServerProcess

MONITORING = Path(__file__).parents[3] / "monitoring"
RULES = MONITORING / "prometheus" / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "prime-spark.json"
METRIC = re.compile(r"\bprime_spark_[a-z0-9_]+")
# Exported only when Kafka is configured (the node under test runs the embedded default).
KAFKA_ONLY = {
    "prime_spark_analytics_kafka_connected",
    "prime_spark_analytics_sink_rows_stored_total",
    "prime_spark_analytics_sink_restarts_total",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: Debian's prometheus package (scripts/setup installs it)")
    return path


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    check = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return exprs


def test_every_metric_named_is_exported(server: ServerProcess) -> None:
    status, _, _ = server.request(
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        token=TOKENS["operator"],
    )
    assert status == 200
    server.request("POST", "/api/v1/analytics/jobs/rollup/run", token=TOKENS["operator"])
    status, _, text = server.request("GET", "/metrics", token=TOKENS["reader"])
    assert status == 200
    exported = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }
    named = {m for e in expressions() for m in METRIC.findall(e)}
    assert named, "no metric found in the rules or the dashboard"
    missing = sorted(named - exported - KAFKA_ONLY)
    assert not missing, f"named in monitoring/ but not exported: {missing}"


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "prime-spark"
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
