"""A directory tree's state, to show that nothing in it changed."""

import hashlib
import os
import stat


def snapshot(top):
    """Recursive listing of ``top``: path -> (mode, uid, content hash)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                with open(full, 'rb') as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = 'link:' + os.readlink(full)
            else:
                digest = 'dir'
            found[os.path.relpath(full, top)] = (st.st_mode, st.st_uid,
                                                 digest)
    return found
