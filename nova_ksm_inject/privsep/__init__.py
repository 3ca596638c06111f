"""Privileged code: the one place that knows whether work runs in a daemon.

nova-compute runs as an unprivileged user; the few privileged jobs run in
oslo.privsep daemons started by our own helper,
``nova-ksm-inject-privsep-helper --privsep_context NAME
--privsep_sock_path PATH``, behind the root helper prefix (``[inject]
root_helper`` for our commands, nova's rootwrap inside nova-compute), or
by a context's ``helper_command`` (suggested: ``sudo
nova-ksm-inject-privsep-helper``). Never by oslo.privsep's
``privsep-helper``, which takes configuration and logging files from its
caller. Each context keeps the smallest capability set its entrypoints
need; :doc:`/admin/privsep` lists them with reasons.

* :mod:`nova_ksm_inject.privsep.client`: what the rest of the package
  calls. A root caller (the CLI run as root, the libvirt hook, the tuner)
  runs the job in its own process; anyone else goes through a daemon.
* :mod:`nova_ksm_inject.privsep.contexts`: the contexts,
  ``inject_pctxt`` (``[privsep_inject]``: one call injects one image, and
  the cleanup sweep; entrypoints in :mod:`nova_ksm_inject.privsep.disk`)
  and ``ksm_pctxt`` (``[privsep_ksm]``: KSM sysfs knobs and the KSM state
  directory; entrypoints in :mod:`nova_ksm_inject.privsep.ksm`).
* :mod:`nova_ksm_inject.privsep.checks`: the daemon's pinned
  configuration files.

Importing this package imports nothing: oslo.privsep (and the eventlet it
imports) costs about 0.15 s, which the default handlers never need. The
contexts keep their pypaths here (``nova_ksm_inject.privsep.inject_pctxt``,
named in rootwrap filters and accepted by the helper) and are imported
from :mod:`~nova_ksm_inject.privsep.contexts` on first use.
"""

_CONTEXTS = ('inject_pctxt', 'ksm_pctxt')


def __getattr__(name):
    # PEP 562: privsep's daemon finds a context by its pypath
    # (importutils.import_class: import the package, then getattr).
    if name in _CONTEXTS:
        from nova_ksm_inject.privsep import contexts
        return getattr(contexts, name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
