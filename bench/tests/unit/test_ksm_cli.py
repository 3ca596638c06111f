"""The KSM benchmark's command (``tox -e bench-ksm``): arguments,
scenarios, and refusals (one line, no traceback, non-zero exit) before
anything is changed."""

import logging

import pytest

from bench import ksm_cli
from bench import ksm_scenario
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from tests.unit.ksm import conftest as ksm_fakes


def test_takes_the_shared_options_from_the_base_parser():
    parser = ksm_cli.build_parser()
    options = {s for action in parser._actions for s in action.option_strings}
    assert {'--config-file', '--verbose', '--debug'} <= options
    with open(ksm_cli.__file__) as f:
        source = f.read()
    for option in ('--config-file', '--verbose', '--debug'):
        assert "'%s'" % option not in source, option


def parse(*argv):
    return ksm_cli.build_parser().parse_args(list(argv))


def test_defaults_run_the_waves_with_every_policy_in_the_issue_order():
    args = parse()
    assert ksm_cli.scenarios_from_args(args) == ['waves']
    assert args.policies is None
    assert ksm_scenario.PRESETS['waves'][1] == (
        'default', 'static-max', 'ksmtuned', 'advisor', 'adaptive')
    scenario = ksm_cli.scenario_from_args(args)
    assert (scenario.waves, scenario.guests, scenario.guest_mib,
            scenario.identical, scenario.duration, scenario.pressure) == (
        3, 4, 256, 0.85, 180.0, False)


@pytest.mark.parametrize('argv, kinds', [
    (['--real-guests'], ['real-guests']),
    (['--scale'], ['scale']),
    (['--scenario', 'churn,share-nothing', '--scale'],
     ['churn', 'share-nothing', 'scale']),
    (['--scenario', 'all'], ['waves', 'real-guests', 'churn',
                             'share-nothing', 'pressure', 'scale', 'grid']),
])
def test_scenarios_are_chosen_by_name_or_flag(argv, kinds):
    assert ksm_cli.scenarios_from_args(parse(*argv)) == kinds


def test_each_scenario_has_its_own_preset_and_explicit_values_win():
    args = parse('--duration', '30')
    churn = ksm_cli.scenario_from_args(args, 'churn')
    assert (churn.kind, churn.arrive_every, churn.lifetime,
            churn.duration) == ('churn', 10.0, 60.0, 30.0)
    nothing = ksm_cli.scenario_from_args(parse(), 'share-nothing')
    assert nothing.identical == 0.0
    assert ksm_cli.scenario_from_args(parse(), 'pressure').pressure


def test_policies_are_checked_and_deduplicated():
    assert parse('--policies', 'adaptive, static-max,adaptive').policies == [
        'adaptive', 'static-max']


@pytest.mark.parametrize('argv, message', [
    (['--policies', 'static,adaptive'], 'unknown policy static'),
    (['--policies', ','], 'unknown policy (none)'),
    (['--scenario', 'fast'], 'unknown scenario fast'),
    (['--guests', '0'], 'out of range'),
    (['--identical', '1.5'], 'out of range'),
    (['--duration', 'soon'], 'is not a number'),
])
def test_bad_arguments_exit_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        parse(*argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_long_makes_bigger_guests_longer_runs_and_pressure():
    scenario = ksm_cli.scenario_from_args(parse('--long'))
    assert (scenario.guest_mib, scenario.duration, scenario.pressure) == (
        1024, 600.0, True)
    # Explicit values win over --long's.
    scenario = ksm_cli.scenario_from_args(parse('--long', '--guest-mib', '512',
                                              '--guests', '2'))
    assert (scenario.guest_mib, scenario.guests) == (512, 2)


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    conf = tmp_path / 'nova.conf'
    conf.write_text('[ksm]\n')
    monkeypatch.setenv('NOVA_KSM_INJECT_CONFIG_FILES', str(conf))
    yield
    CONF.reset()
    logging.getLogger('nova_ksm_inject').setLevel(logging.NOTSET)


def test_refuses_when_ksm_is_missing(no_config, tmp_path, monkeypatch,
                                     capsys):
    monkeypatch.setattr(ksm_sysfs, 'KSM_ROOT', str(tmp_path / 'nothing'))
    monkeypatch.setattr('os.geteuid', lambda: 0)
    assert ksm_cli.main(['--policies', 'default']) != 0
    err = capsys.readouterr().err
    assert err.startswith('bench-ksm: error: ')
    assert 'KSM is not available' in err
    assert 'nothing/run does not exist' in err
    assert 'Traceback' not in err


def test_refuses_without_root(no_config, tmp_path, monkeypatch, capsys):
    fake = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    monkeypatch.setattr(ksm_sysfs, 'KSM_ROOT', fake.root)
    monkeypatch.setattr('os.geteuid', lambda: 1000)
    assert ksm_cli.main(['--policies', 'default']) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        'bench-ksm: error: Cannot run the KSM benchmark: it must run '
        'as root: it writes %s and reads ksmd\'s CPU time; run it with '
        'sudo' % fake.root]
    # Nothing was written.
    assert fake.get('run') == '0'
