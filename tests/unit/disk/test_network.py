"""The guest network configuration rendered from its Jinja2 template."""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import network


def test_render_default_dhcp_and_static():
    text = network.render_network([
        {'name': 'eth0', 'use_dhcp': True},
        {'name': 'eth1', 'use_dhcp': False, 'address': '10.0.0.5',
         'netmask': '255.255.255.0', 'gateway': '10.0.0.1',
         'broadcast': '10.0.0.255', 'dns': ['192.0.2.53', '192.0.2.54'],
         'address_v6': 'fd00::5', 'netmask_v6': '64',
         'gateway_v6': 'fd00::1'}])
    lines = [line.strip() for line in text.splitlines()]
    assert lines[lines.index('auto lo') + 1] == 'iface lo inet loopback'
    assert lines[lines.index('auto eth0') + 1] == 'iface eth0 inet dhcp'
    static = lines[lines.index('auto eth1') + 1:]
    assert static[:6] == ['iface eth1 inet static', 'address 10.0.0.5',
                          'netmask 255.255.255.0', 'broadcast 10.0.0.255',
                          'gateway 10.0.0.1',
                          'dns-nameservers 192.0.2.53 192.0.2.54']
    assert static[6:9] == ['iface eth1 inet6 static', 'address fd00::5',
                           'netmask 64']
    assert 'None' not in text and '&' not in text


def test_render_static_without_optional_values():
    text = network.render_network([{'name': 'ens3', 'use_dhcp': False,
                                   'address': '192.0.2.7',
                                   'netmask': '255.255.255.0'}])
    assert 'gateway' not in text and 'dns-nameservers' not in text
    assert 'inet6' not in text


def test_render_missing_value_is_an_error():
    with pytest.raises(exception.ConfigError, match='address'):
        network.render_network([{'name': 'eth0', 'use_dhcp': False}])


def test_render_refuses_line_breaks():
    with pytest.raises(exception.InjectionLimit, match='control'):
        network.render_network([{'name': 'eth0', 'use_dhcp': False,
                                'address': '10.0.0.1\n    up rm -rf /',
                                'netmask': '255.0.0.0'}])


def test_render_operator_template_no_escaping(tmp_path, conf):
    template = tmp_path / 'net.tmpl'
    template.write_text('{% for i in interfaces %}{{ i.name }} & '
                        '{{ i.address }}{% endfor %} v6={{ use_ipv6 }}\n')
    conf.config(injected_network_template=str(template))
    out = network.render_network([{'name': '<e0>', 'use_dhcp': False,
                                  'address': '"10.0.0.1"'}])
    assert out == '<e0> & "10.0.0.1" v6=False\n'


def test_render_missing_template(tmp_path):
    with pytest.raises(exception.ConfigError, match='nope.tmpl'):
        network.render_network([], template_path=str(tmp_path / 'nope.tmpl'))

