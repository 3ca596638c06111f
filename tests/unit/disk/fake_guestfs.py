"""An in-memory stand-in for a libguestfs handle (``guestfs.GuestFS``).

It keeps a guest tree of dirs, files, symlinks and hard links (one node
dict under several paths) and resolves paths as the appliance daemon does
after chroot into the guest root. Calls follow symlinks where the real
ones do (``chmod``, ``write``, ``write_append``, ``read_file``), so code
that lets them follow a link is caught here; whether the appliance keeps
paths inside the guest is for the functional tests to show, not this
fake. Errors are RuntimeError with libguestfs-style messages. Only the
calls the handler and GuestfsFiles make exist; every call is recorded in
``calls``.
"""

import posixpath
import stat


def _error(call, path, text='No such file or directory'):
    return RuntimeError('%s: %s: %s' % (call, path, text))


class FakeGuestFS:

    def __init__(self, partitions=('/dev/sda1', '/dev/sda2'), roots=(),
                 mountpoints=None, launch=None):
        self.calls = []
        self.nodes = {'/': {'type': 'dir', 'mode': 0o755, 'uid': 0,
                            'gid': 0}}
        self.partitions = list(partitions)
        self.roots = list(roots)
        self.mountpoints = mountpoints or {}
        self.launch_hook = launch
        self.mounted = []
        self.closed = False

    # -- building the tree ------------------------------------------------

    def add(self, path, kind='file', data=b'', mode=0o644, uid=0, gid=0,
            target=None):
        self.nodes[path] = {'type': kind, 'mode': mode, 'uid': uid,
                            'gid': gid, 'data': data, 'target': target}

    def link(self, path, existing):
        """A hard link: ``path`` names the node of ``existing``."""
        self.nodes[path] = self.nodes[existing]

    def nlink(self, path):
        node = self.nodes[path]
        return sum(1 for other in self.nodes.values() if other is node)

    def resolve(self, path, follow=True, depth=0):
        """The node path ``path`` names, resolved inside the tree."""
        current = '/'
        parts = [p for p in path.split('/') if p not in ('', '.')]
        for index, part in enumerate(parts):
            if part == '..':
                current = posixpath.dirname(current) or '/'
                continue
            candidate = posixpath.join(current, part)
            node = self.nodes.get(candidate)
            last = index == len(parts) - 1
            if node and node['type'] == 'link' and (follow or not last):
                if depth > 20:
                    raise _error('resolve', path, 'Too many levels')
                base = '/' if node['target'].startswith('/') else current
                candidate = self.resolve(posixpath.join(base, node['target']),
                                         True, depth + 1)
            current = candidate
        return current

    def _node(self, call, path, follow=True):
        node = self.nodes.get(self.resolve(path, follow))
        if node is None:
            raise _error(call, path)
        return node

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if callable(attr) and not name.startswith('_') and name not in (
                'add', 'link', 'nlink', 'resolve'):
            calls = object.__getattribute__(self, 'calls')

            def recorded(*args, **kwargs):
                calls.append((name,) + args)
                return attr(*args, **kwargs)
            return recorded
        return attr

    # -- handle lifecycle -------------------------------------------------

    def set_backend(self, backend):
        pass

    def set_backend_settings(self, settings):
        pass

    def set_trace(self, flag):
        pass

    def set_verbose(self, flag):
        pass

    def add_drive_opts(self, path, format=None, readonly=None):
        pass

    def launch(self):
        if self.launch_hook:
            self.launch_hook()

    def shutdown(self):
        pass

    def close(self):
        self.closed = True

    def list_partitions(self):
        return list(self.partitions)

    def mount(self, device, mountpoint):
        if device not in self.partitions + ['/dev/sda']:
            raise _error('mount', device)
        self.mounted.append((device, mountpoint))

    def inspect_os(self):
        return list(self.roots)

    def inspect_get_mountpoints(self, root):
        return dict(self.mountpoints)

    def inspect_get_type(self, root):
        return 'linux'

    def inspect_get_distro(self, root):
        return 'debian'

    # -- files ------------------------------------------------------------

    def exists(self, path):
        return self.resolve(path) in self.nodes

    def is_file(self, path, followsymlinks=False):
        node = self.nodes.get(self.resolve(path, followsymlinks))
        return bool(node) and node['type'] == 'file'

    def is_dir(self, path, followsymlinks=False):
        node = self.nodes.get(self.resolve(path, followsymlinks))
        return bool(node) and node['type'] == 'dir'

    def is_symlink(self, path):
        node = self.nodes.get(self.resolve(path, follow=False))
        return bool(node) and node['type'] == 'link'

    def readlink(self, path):
        return self._node('readlink', path, follow=False)['target']

    def _stat(self, call, path, follow):
        real = self.resolve(path, follow)
        node = self.nodes.get(real)
        if node is None:
            raise _error(call, path)
        kind = {'dir': stat.S_IFDIR, 'file': stat.S_IFREG,
                'link': stat.S_IFLNK, 'char': stat.S_IFCHR}[node['type']]
        return {'st_mode': kind | node['mode'], 'st_uid': node['uid'],
                'st_gid': node['gid'], 'st_nlink': self.nlink(real),
                'st_size': len(node.get('data') or b'')}

    def statns(self, path):
        return self._stat('statns', path, True)

    def lstatns(self, path):
        return self._stat('lstatns', path, False)

    def realpath(self, path):
        real = self.resolve(path)
        if real not in self.nodes:
            raise _error('realpath', path)
        return real

    def read_file(self, path):
        return self._node('read_file', path)['data']

    def _parent_dir(self, call, path, follow=True):
        real = self.resolve(path, follow)
        parent = self.nodes.get(posixpath.dirname(real))
        if not parent or parent['type'] != 'dir':
            raise _error(call, path)
        return real

    def mkdir_mode(self, path, mode):
        real = self._parent_dir('mkdir_mode', path, follow=False)
        if real in self.nodes:
            raise _error('mkdir_mode', path, 'File exists')
        self.add(real, 'dir', mode=mode & ~0o022)

    def chown(self, uid, gid, path):
        node = self._node('chown', path)
        node['uid'], node['gid'] = uid, gid

    def lchown(self, uid, gid, path):
        node = self._node('lchown', path, follow=False)
        node['uid'], node['gid'] = uid, gid

    def chmod(self, mode, path):
        self._node('chmod', path)['mode'] = mode

    def write(self, path, data):
        real = self._parent_dir('write', path)  # follows like open(O_CREAT)
        old = self.nodes.get(real)
        if old:
            old['data'] = data
        else:
            self.add(real, data=data, mode=0o644)

    def write_append(self, path, data):
        self._node('write_append', path)['data'] += data

    def rename(self, old, new):
        source = self.resolve(old, follow=False)
        target = self._parent_dir('rename', new, follow=False)
        self.nodes[target] = self.nodes.pop(source)

    def rm_f(self, path):
        self.nodes.pop(self.resolve(path, follow=False), None)
