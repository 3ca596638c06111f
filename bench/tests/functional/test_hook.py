"""The hook benchmark, for real (root): the shim and the console script
on a private copy of the KSM tree. The cached path must cost well under
half of the full path measured in the same run, and the events the hook
ignores must not start Python at all."""

import json
import os
import statistics
import subprocess
import sys

# python -m bench.hook runs from the repository's root.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))


def test_cached_runs_cost_a_fraction_of_full_runs(tmp_path):
    out = tmp_path / 'hook.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'bench.hook', '--guests',
         '4', '--json', str(out)], capture_output=True, text=True,
        timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = {(r['mode'], r['event']): r for r in json.loads(
        out.read_text())['rows']}
    relevant = ('prepare begin', 'started begin', 'release end')
    for event in relevant:
        full = rows['full', event]['cpu_ms']['median']
        cached = rows['cached', event]['cpu_ms']['median']
        assert cached < full / 2, (event, cached, full)
    ignored = statistics.median(
        rows[mode, event]['cpu_ms']['median'] for mode in ('full', 'cached')
        for event in ('start begin', 'stopped end'))
    python_runs = min(rows['cached', e]['cpu_ms']['min'] for e in relevant)
    # sh reading the XML, against a Python interpreter starting.
    assert ignored < python_runs / 3, (ignored, python_runs)
    assert 'cached  prepare begin' in proc.stdout
