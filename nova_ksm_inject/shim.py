"""Make ``nova.virt.ksm_inject`` importable wherever nova is installed.

nova loads a compute driver only as ``nova.virt.<compute_driver>``, and
nova is a regular package: once ``nova`` is imported from one directory,
our ``nova/virt/ksm_inject/`` in any other directory is never looked at.
That is the case of a distribution's nova (``/usr/lib/python3/
dist-packages``) with this package installed by pip elsewhere
(``/usr/local/lib/python3.11/dist-packages``).

The wheel ships ``nova-ksm-inject-shim.pth`` next to this package; the
interpreter runs its one line, :func:`install`, at start-up in every site
directory. It puts a finder at the end of ``sys.meta_path`` that answers
for ``nova.virt.ksm_inject`` alone, and only after the finders before it
(nova's own ``nova/virt/`` first) found nothing. Start-up cost: this
module, standard library modules already loaded, no nova or oslo import.
``PYTHONPATH`` and ``pip install --target`` directories are not site
directories: their ``.pth`` files never run (``nova-ksm-inject check
nova`` says so and gives the fix).
"""

import os
import sys

SHIM_MODULE = 'nova.virt.ksm_inject'
PTH_NAME = 'nova-ksm-inject-shim.pth'
# The one line of PTH_NAME (setup.py writes it into the wheel).
PTH_LINE = 'import nova_ksm_inject.shim; nova_ksm_inject.shim.install()'


def shim_dir(site_dir=None):
    """The ``nova/virt/ksm_inject`` directory installed with this module
    (or in ``site_dir``)."""
    if site_dir is None:
        site_dir = os.path.dirname(os.path.dirname(os.path.abspath(
            __file__)))
    return os.path.join(site_dir, 'nova', 'virt', 'ksm_inject')


class ShimFinder:
    """A meta path finder for ``nova.virt.ksm_inject`` only."""

    def __init__(self, directory):
        self.directory = directory

    def find_spec(self, fullname, path=None, target=None):
        if fullname != SHIM_MODULE:
            return None
        init = os.path.join(self.directory, '__init__.py')
        if not os.path.isfile(init):
            return None
        from importlib import util  # only when nova loads the driver

        return util.spec_from_file_location(
            fullname, init, submodule_search_locations=[self.directory])

    def __repr__(self):
        return '%s(%r)' % (type(self).__name__, self.directory)


def installed(meta_path=None):
    """The :class:`ShimFinder` on ``meta_path`` (``sys.meta_path``), or
    None."""
    for finder in sys.meta_path if meta_path is None else meta_path:
        # By name: the finder may come from another copy of this module.
        if type(finder).__name__ == ShimFinder.__name__:
            return finder
    return None


def install(meta_path=None, directory=None):
    """Append a :class:`ShimFinder` for this installation, once."""
    meta_path = sys.meta_path if meta_path is None else meta_path
    if installed(meta_path) is None:
        meta_path.append(ShimFinder(directory or shim_dir()))
