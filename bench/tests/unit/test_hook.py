"""The hook benchmark's figures (the runs themselves: functional)."""

from bench import hook as bench_hook


def test_summarize_and_table():
    rows = bench_hook.summarize({'cached': {
        'prepare begin': [(0.040, 0.039), (0.050, 0.041), (0.045, 0.040)],
        'start begin': [(0.002, 0.002)]}})
    assert rows[0] == {'mode': 'cached', 'event': 'prepare begin',
                       'runs': 3,
                       'wall_ms': {'median': 45.0, 'min': 40.0, 'max': 50.0},
                       'cpu_ms': {'median': 40.0, 'min': 39.0, 'max': 41.0}}
    table = bench_hook.format_table(rows).splitlines()
    assert table[1].split() == ['cached', 'prepare', 'begin', '3', '45.0',
                                '(40.0-50.0)', '40.0', '(39.0-41.0)']


def test_refuses_without_root(monkeypatch, capsys):
    monkeypatch.setattr(bench_hook.os, 'geteuid', lambda: 1000)
    assert bench_hook.main([]) == 1
    assert 'needs root' in capsys.readouterr().err


def test_inner_refuses_the_real_ksm_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_hook, 'KSM', str(tmp_path))
    assert bench_hook.main(['--inner', str(tmp_path)]) == 1
    assert 'not the benchmark copy' in capsys.readouterr().err
