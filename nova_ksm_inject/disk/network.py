"""The guest network configuration, rendered from a Jinja2 template.

Rendered by the caller, unprivileged; the privileged side receives the
text and writes it to ``/etc/network/interfaces``.
"""

import os

import jinja2

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF

DEFAULT_TEMPLATE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'templates', 'interfaces.template')
# Optional interface keys; the rest must be given or the template fails.
_IFACE_DEFAULTS = {'broadcast': None, 'gateway': None, 'dns': (),
                   'address_v6': None, 'gateway_v6': None}
def _normalize_interface(ifc):
    ifc = dict(_IFACE_DEFAULTS, **ifc)
    if isinstance(ifc['dns'], str):
        ifc['dns'] = ifc['dns'].split()
    # A line break in a value could add an "up <command>" line that
    # ifupdown runs as root in the guest.
    for key, value in ifc.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and not v.isprintable() for v in values):
            raise exception.InjectionLimit(reason=(
                'network value %s=%r of interface %s has control characters'
                % (key, value, ifc.get('name'))))
    return ifc


def render_network(interfaces, template_path=None, conf=None):
    """Render the guest network configuration; return its text.

    ``template_path`` defaults to ``[DEFAULT] injected_network_template``,
    then the packaged Debian ``/etc/network/interfaces`` template. The
    template gets ``interfaces`` (dicts with ``name``, ``use_dhcp``,
    ``address``, ``netmask``, ``broadcast``, ``gateway``, ``dns``, and
    optionally ``address_v6``, ``netmask_v6``, ``gateway_v6``) and, as in
    nova, ``use_ipv6``.

    :raises ConfigError: missing or broken template, or a value it uses is
        missing (StrictUndefined: a typo fails instead of writing "").
    """
    path = (template_path or (conf or CONF).injected_network_template or
            DEFAULT_TEMPLATE)
    ifaces = [_normalize_interface(ifc) for ifc in interfaces]
    # autoescape off: the output is a plain-text config file read by
    # ifupdown, where HTML entities (&amp;) would be corrupt values.
    # trim_blocks as in nova, so operators' nova templates render the same.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.dirname(path) or '.'),
        undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
        keep_trailing_newline=True)
    try:
        template = env.get_template(os.path.basename(path))
        return template.render(interfaces=ifaces, use_ipv6=any(
            ifc['address_v6'] for ifc in ifaces))
    except (jinja2.TemplateError, OSError) as err:
        raise exception.ConfigError(reason=(
            'cannot render network template %s: %s; fix [DEFAULT] '
            'injected_network_template or the interface data'
            % (path, err or type(err).__name__))) from err
