"""One guest tree, two GuestFiles implementations.

``guest`` builds and inspects a guest tree the same way for the host
implementation (a directory under tmp_path, owners through the ``owners``
fixture so no root is needed) and for the appliance implementation (a
:class:`~tests.unit.disk.fake_guestfs.FakeGuestFS`), so the shared write
rules of ``files/base.py`` are checked once, against both.
"""

import os
import stat

import pytest

from nova_ksm_inject.disk.files import appliance
from nova_ksm_inject.disk.files import host
from tests.unit.disk.fake_guestfs import FakeGuestFS


class HostGuest:
    """A guest tree in a directory, written through HostRootFiles."""

    def __init__(self, root, owners, conf):
        self.root = root
        self.owners = owners
        root.mkdir()
        self.files = host.HostRootFiles(str(root), conf)

    def _path(self, path):
        return self.root / path.lstrip('/')

    def file(self, path, data=b'', mode=0o644, uid=0, gid=0):
        self._path(path).write_bytes(data)
        self._own(path, mode, uid, gid)

    def dir(self, path, mode=0o755, uid=0, gid=0):
        self._path(path).mkdir()
        self._own(path, mode, uid, gid)

    def _own(self, path, mode, uid, gid):
        os.chmod(self._path(path), mode)
        self.owners.chown(self._path(path), uid, gid)

    def fifo(self, path):
        os.mkfifo(self._path(path))

    def symlink(self, path, target):
        """Make the link; return its target. An absolute target becomes
        relative: a regression resolving it on the host would otherwise
        change the machine's own /etc as root, instead of failing."""
        if target.startswith('/'):
            target = os.path.relpath(target, os.path.dirname(path))
        os.symlink(target, self._path(path))
        return target

    def hardlink(self, path, existing):
        os.link(self._path(existing), self._path(path))

    def kind(self, path):
        try:
            mode = os.lstat(self._path(path)).st_mode
        except FileNotFoundError:
            return None
        return ('link' if stat.S_ISLNK(mode) else 'dir' if stat.S_ISDIR(mode)
                else 'file' if stat.S_ISREG(mode) else 'other')

    def content(self, path):
        return self._path(path).read_bytes()

    def perms(self, path):
        return self.owners.of(self._path(path))

    def nlink(self, path):
        return os.lstat(self._path(path)).st_nlink

    def identity(self, path):
        return os.lstat(self._path(path)).st_ino

    def names(self, path):
        return sorted(os.listdir(self._path(path)))

    def close(self):
        self.files.close()


class ApplianceGuest:
    """The same on a fake libguestfs handle."""

    def __init__(self, conf):
        self.g = FakeGuestFS()
        self.files = appliance.GuestfsFiles(self.g, conf)

    def file(self, path, data=b'', mode=0o644, uid=0, gid=0):
        self.g.add(path, data=data, mode=mode, uid=uid, gid=gid)

    def dir(self, path, mode=0o755, uid=0, gid=0):
        self.g.add(path, 'dir', mode=mode, uid=uid, gid=gid)

    def fifo(self, path):
        self.g.add(path, 'char')

    def symlink(self, path, target):
        self.g.add(path, 'link', target=target)
        return target

    def hardlink(self, path, existing):
        self.g.link(path, existing)

    def kind(self, path):
        node = self.g.nodes.get(path)
        return node and node['type']

    def content(self, path):
        return self.g.nodes[path]['data']

    def perms(self, path):
        node = self.g.nodes[path]
        return node['mode'], node['uid'], node['gid']

    def nlink(self, path):
        return self.g.nlink(path)

    def identity(self, path):
        return id(self.g.nodes[path])

    def names(self, path):
        prefix = path.rstrip('/') + '/'
        return sorted(p[len(prefix):] for p in self.g.nodes
                      if p.startswith(prefix) and '/' not in p[len(prefix):])

    def close(self):
        pass


@pytest.fixture(params=['host', 'appliance'])
def guest(request, tmp_path, owners, conf):
    """A guest tree with /etc, /etc/passwd and /root; ``guest.files`` is
    the implementation under test."""
    made = (HostGuest(tmp_path / 'guest', owners, conf.conf)
            if request.param == 'host' else ApplianceGuest(conf.conf))
    made.dir('/etc')
    made.file('/etc/passwd', b'root:x:0:0::/root:/bin/sh\n')
    made.dir('/root', 0o700)
    yield made
    made.close()
