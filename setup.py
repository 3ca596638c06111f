"""setuptools, plus the one file setup.cfg cannot ship: a ``.pth`` at the
root of the wheel (see :mod:`nova_ksm_inject.shim`)."""

import os

import setuptools
from setuptools.command import build_py

# Kept in step with nova_ksm_inject/shim.py (PTH_NAME, PTH_LINE), which
# setup.py cannot import before the package's dependencies are installed;
# tests/unit/test_shim.py checks both.
PTH_NAME = 'nova-ksm-inject-shim.pth'
PTH_LINE = 'import nova_ksm_inject.shim; nova_ksm_inject.shim.install()'


class BuildPyWithPth(build_py.build_py):
    """build_py that also writes PTH_NAME into the wheel's purelib root,
    so that nova's loader finds ``nova.virt.ksm_inject`` when nova is
    installed in another site directory."""

    def run(self):
        super().run()
        path = os.path.join(self.build_lib, PTH_NAME)
        with open(path, 'w') as f:
            f.write(PTH_LINE + '\n')
        self._remove_stale_files()

    def _remove_stale_files(self):
        # build/lib outlives the checkout's history: a module since
        # removed or renamed would otherwise be shipped again.
        keep = {os.path.abspath(p) for p in self.get_outputs()}
        for root, _dirs, files in os.walk(self.build_lib):
            for name in files:
                path = os.path.abspath(os.path.join(root, name))
                if path not in keep:
                    os.unlink(path)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, PTH_NAME)]


setuptools.setup(cmdclass={'build_py': BuildPyWithPth})
