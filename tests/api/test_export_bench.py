"""bench/export_bench.py runs and prints its figures (the real sizes are run by hand), and its
smoke sizes already show the export's memory flat: several fetches of rows, not one."""

from __future__ import annotations

import re
import subprocess
import sys

from payments.selectors import transactions_for_export
from tests.services import ROOT

# The export's fetch size (``chunk_size`` of transactions_for_export).
FETCH_SIZE = transactions_for_export.__kwdefaults__["chunk_size"]


def test_export_benchmark_smoke_run_prints_rows_per_second_and_flat_memory():
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
    sizes = [int(r[0].replace(",", "")) for r in rows]
    assert sizes == [4_000, 12_000], out.stdout
    # Several fetches each, the larger three times as many rows: memory must not follow them.
    assert sizes[0] >= 2 * FETCH_SIZE
    assert sizes[1] >= 6 * FETCH_SIZE
    assert all(int(r[1].replace(",", "")) > 0 for r in rows)
    assert "peak RSS x" in out.stdout
    ratio = re.search(r"peak Python allocations x([\d.]+)", out.stdout)
    assert ratio, out.stdout
    peaks = [float(r[3]) for r in rows]
    assert float(ratio.group(1)) <= 1.3, out.stdout
    assert peaks[1] <= 1.3 * peaks[0], out.stdout
