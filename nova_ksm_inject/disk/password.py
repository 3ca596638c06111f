"""SHA-512 crypt(3) of the admin password, through the system libcrypt."""

import ctypes
import ctypes.util
import functools
import secrets
import string

_SALT_CHARS = string.ascii_letters + string.digits + './'
# sizeof(struct crypt_data): ~32 KiB in libxcrypt, ~128 KiB in the old
# glibc libcrypt; a larger zeroed buffer fits both.
_CRYPT_DATA_SIZE = 256 * 1024


@functools.lru_cache(maxsize=1)
def _crypt_r():
    name = ctypes.util.find_library('crypt')
    if name is None:
        raise OSError('libcrypt not found; install the Debian package '
                      'libcrypt1')
    func = ctypes.CDLL(name).crypt_r
    func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    func.restype = ctypes.c_char_p
    return func


def sha512_crypt(password, salt=None):
    """Return the SHA-512 crypt(3) hash ``$6$<salt>$...`` of ``password``.

    The stdlib ``crypt`` module is deprecated (gone in 3.13): this calls
    the system libcrypt's ``crypt_r`` with a private buffer (thread-safe).
    """
    salt = salt or ''.join(secrets.choice(_SALT_CHARS) for _ in range(16))
    data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = _crypt_r()(password.encode('utf-8'),
                        ('$6$' + salt).encode('ascii'), data)
    if not result or not result.startswith(b'$6$'):
        raise ValueError('libcrypt did not produce a SHA-512 hash (got %r); '
                         'it may lack SHA-512 support' % (result or b'')[:3])
    return result.decode('ascii')
