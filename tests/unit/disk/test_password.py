"""SHA-512 crypt(3) through the system libcrypt.

Checked with ``openssl passwd -6``, a reader independent of libcrypt.
"""

import subprocess

import pytest

from nova_ksm_inject.disk import password


def test_hash_matches_openssl():
    hashed = password.sha512_crypt('S3cret pa$$word', salt='abcdefgh12345678')
    out = subprocess.run(['openssl', 'passwd', '-6', '-salt',
                          'abcdefgh12345678', 'S3cret pa$$word'],
                         capture_output=True, text=True, check=True)
    assert hashed == out.stdout.strip()


def test_salt_is_random_and_16_characters():
    first, second = password.sha512_crypt('x'), password.sha512_crypt('x')
    assert first != second
    for hashed in (first, second):
        assert hashed.startswith('$6$') and len(hashed.split('$')[2]) == 16


def test_libcrypt_without_sha512_is_an_error(monkeypatch):
    monkeypatch.setattr(password, '_crypt_r', lambda: lambda *a: b'*0')
    with pytest.raises(ValueError, match='SHA-512'):
        password.sha512_crypt('x')
