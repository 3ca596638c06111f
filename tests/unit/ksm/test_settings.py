"""``[ksm]`` options: the contract names, validation, the value object."""

from oslo_config import cfg
import pytest

from nova_ksm_inject.conf import ksm as conf_ksm
from nova_ksm_inject.ksm import settings as ksm_settings

CONTRACT = ('enabled', 'policy', 'pages_to_scan', 'sleep_millisecs',
            'merge_across_nodes', 'use_zero_pages', 'max_page_sharing',
            'cpu_budget_percent', 'restore_on_exit', 'connection_uri')


@pytest.fixture
def load(tmp_path):
    def _load(text):
        conf = cfg.ConfigOpts()
        conf_ksm.register_opts(conf)
        path = tmp_path / 'nova.conf'
        path.write_text('[ksm]\n' + text)
        conf([], default_config_files=[str(path)])
        return conf
    return _load


def test_contract_names_exist():
    names = {opt.name for opt in conf_ksm.list_opts()[conf_ksm.ksm_group]}
    assert set(CONTRACT) <= names


def test_defaults_match_the_value_object(load):
    assert ksm_settings.KsmSettings.from_conf(load('')) == \
        ksm_settings.KsmSettings()


def test_values_are_read_and_normalised(load):
    settings = ksm_settings.KsmSettings.from_conf(load(
        'enabled = TRUE\npolicy = Static\npages_to_scan = 1000000000\n'
        'merge_across_nodes = false\n'))
    assert settings.enabled == 'true' and settings.policy == 'static'
    assert settings.static_knobs()['pages_to_scan'] == 10 ** 9
    assert settings.static_knobs()['merge_across_nodes'] == 0


@pytest.mark.parametrize('text,match', [
    ('enabled = maybe', r'Valid values are \[true, false, auto\]'),
    ('policy = fast', 'static'),
    ('pages_to_scan = 0', 'greater than or equal to 1'),
    ('sleep_millisecs = 60001', 'less than or equal to 60000'),
    ('max_page_sharing = 1', 'greater than or equal to 2'),
    ('cpu_budget_percent = 101', 'less than or equal to 100'),
])
def test_invalid_values_name_the_range(load, text, match):
    conf = load(text)
    with pytest.raises(cfg.ConfigFileValueError, match=match):
        ksm_settings.KsmSettings.from_conf(conf)


@pytest.mark.parametrize('enabled,guests,run', [
    ('auto', 0, False), ('auto', 1, True), ('true', 0, True),
    ('false', 5, False),
])
def test_wants_run(enabled, guests, run):
    assert ksm_settings.KsmSettings(enabled=enabled).wants_run(guests) is run


def test_tree_knobs_leave_the_rate_alone():
    knobs = ksm_settings.KsmSettings().tree_knobs()
    assert 'pages_to_scan' not in knobs and 'sleep_millisecs' not in knobs
    assert knobs['max_page_sharing'] == 256
