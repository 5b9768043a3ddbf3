"""bench/export_bench.py runs and prints its figures (the real sizes are run by hand)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.services import ROOT


def test_export_benchmark_smoke_run_prints_rows_per_second_and_peak_memory():
    out = subprocess.run(
        [sys.executable, "bench/export_bench.py", "--smoke", "--tracemalloc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert out.returncode == 0, out.stderr
    rows = re.findall(
        r"^\s+([\d,]+)\s+[\d.]+\s+([\d,]+)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)$", out.stdout, re.M
    )
    assert [r[0] for r in rows] == ["500", "2,000"], out.stdout
    assert all(int(r[1].replace(",", "")) > 0 for r in rows)
    assert "peak RSS x" in out.stdout
    assert "peak Python allocations x" in out.stdout
