"""One line, not dozens of failures, when a tier's host is not set up.

``tox -e functional`` (or ``nova-functional``) run by hand on a machine
where ``tools/install-packages`` and ``tools/start-daemons`` have not run
would fail test by test; :func:`require` stops the session first with the
missing pieces and the command that provides them.
"""

import os
import shutil

import pytest

LIBVIRT_SOCKET = '/run/libvirt/libvirt-sock'
SETUP = 'run tools/install-packages and tools/start-daemons as root'


def require(tier, tools=(), libvirtd=False):
    """Exit the session (status 4) naming what ``tier`` lacks."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if libvirtd and not os.path.exists(LIBVIRT_SOCKET):
        missing.append('libvirtd (no %s)' % LIBVIRT_SOCKET)
    if missing:
        pytest.exit('%s tests need the Debian packages of bindep.txt and '
                    'libvirtd: %s (missing: %s)'
                    % (tier, SETUP, ', '.join(missing)), returncode=4)
