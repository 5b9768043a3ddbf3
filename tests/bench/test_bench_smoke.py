"""bench/run.py runs and prints its figures for the gateway and the reference side by side.

Only the short smoke form runs here; speed is never asserted. What is asserted is that the
benchmark measured something: every payment it sent was answered and stored, and each side
printed numbers. The real sizes run by hand (make bench), see docs/performance.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests.services import ROOT, postgres_url, redis_url


def run_bench(tmp_path, *args: str, env: dict[str, str] | None = None) -> tuple[str, dict]:
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--json", str(out_json), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out_json.read_text())["results"]


def printed(stdout: str, target: str, figure: str) -> float:
    """The median the benchmark printed for one target and figure."""
    match = re.search(
        rf"^\s+{re.escape(target)}\s+{figure}\s+min\s+\S+\s+median\s+([\d,.]+)\s", stdout, re.M
    )
    assert match, f"no {figure} for {target} in:\n{stdout}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.timeout(240)
def test_smoke_run_prints_latency_and_throughput_for_gateway_and_reference(tmp_path):
    stdout, results = run_bench(
        tmp_path, "--scenarios", "1,2", "--uvicorn-scenarios", "", "--webhooks"
    )

    assert "Scenario 1" in stdout
    assert "Scenario 2" in stdout
    for target in ("reference", "gateway"):
        assert printed(stdout, target, "p50_ms") > 0
        assert printed(stdout, target, "p99_ms") > 0
    section2 = stdout[stdout.index("Scenario 2") :]
    for target in ("reference", "gateway"):
        for figure in ("round_trips_s", "p99_ms", "cpu_us_per_rt", "peak_rss_mib"):
            assert printed(section2, target, figure) > 0
    assert re.search(r"^\s+gateway\s+round_trips_s .* ratio\s+[\d.]+x$", section2, re.M)
    # Every payment of the closed loop was answered, and the gateway stored each as SUCCESS.
    for run in results["2"]["gateway"]:
        assert run["errors"] == 0
        assert run["timeouts"] == 0
        assert run["lost"] == 0
        assert math.isfinite(run["p99_ms"])
    # --webhooks (issue 15): the same gateway with every store subscribed to every event; its
    # worker delivered signed events to the bench's receiver while the payments ran.
    assert re.search(
        r"^\s+gateway-webhooks\s+round_trips_s .* ratio\s+[\d.]+x of gateway$", section2, re.M
    )
    assert printed(section2, "gateway-webhooks", "wh_received") > 0
    for run in results["2"]["gateway-webhooks"]:
        assert run["errors"] == 0
        assert run["lost"] == 0
        assert 0 < run["wh_received"] <= run["wh_events"]
        assert run["wh_bad"] == 0
        assert run["wh_failed_attempts"] == 0


@pytest.mark.production
@pytest.mark.production_pass_only
@pytest.mark.timeout(240)
def test_smoke_run_of_two_daphne_processes_on_postgres_and_redis_loses_no_payment(tmp_path):
    # Scenario 6 makes its own throwaway database on this server (tests/bench/conftest.py runs
    # it in the PostgreSQL + Redis pass only).
    env = {"BENCH_POSTGRES_URL": postgres_url(), "BENCH_REDIS_URL": redis_url()}
    stdout, results = run_bench(tmp_path, "--scenarios", "6", env=env)

    assert "Scenario 6" in stdout
    assert printed(stdout, "gateway", "round_trips_s") > 0
    assert printed(stdout, "gateway", "postgres_cpu_us_per_rt") >= 0
    for run in results["6"]["gateway"]:
        assert run["errors"] == 0
        assert run["timeouts"] == 0
        assert run["lost"] == 0
