"""Servers created through nova's API boot as real QEMU guests on the
host's libvirtd, with what we injected, and merge real memory.

One cloud and its guests serve the whole module (TCG boots take minutes):
``lab`` (key pair, personality file, admin password; ``ksm:merge=true``),
``twin`` (same image and flavor) and ``apart`` (``ksm:merge=false``) boot
together; the tests then look at them in this file's order, rebuild
``lab`` and finally delete everything. The verifiers are independent of
our code: the guest's own console (what it read from its disk), the
kernel's KSM counters and each QEMU's ``ksm_stat``, ``virsh dumpxml``.
"""

import base64
import os

import pytest

from tests.lib import guest_image
from tests.lib import ksm_state
from tests.nova import base as nova_base
from tests.nova_libvirt import base

KEY = ('ssh-ed25519 '
       'AAAAC3NzaC1lZDI1NTE5AAAAINPl9IVmJ+9riY1lT0JR+8Gjccxq8YndyFoXRrCA8Duf '
       'lab@course')
NEW_KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM9EiG5U9CTOE23Djk2e9bS1Vt'
           'BgYHBSYtb8zgK0MiU5 rebuilt@course')
PASSWORD = 'Lab-1-s3cret'
MOTD_PATH = guest_image.EVIDENCE_DIR + '/motd'
MOTD = 'Welcome to lab 1'
#: Each merging guest: at least this much of its memory merged.
MERGED_MIB = 16
PAGE = os.sysconf('SC_PAGE_SIZE')


def personality(path, text):
    return {'path': path,
            'contents': base64.b64encode(text.encode()).decode()}


@pytest.fixture(scope='module')
def cloud():
    with base.shared_cloud() as cloud:
        cloud.image = cloud.debian_image()
        cloud.merge = merge = cloud.flavor('merge', {'ksm:merge': 'true'})
        apart = cloud.flavor('apart', {'ksm:merge': 'false'})
        cloud.api.post_keypair({'keypair': {'name': 'lab',
                                            'public_key': KEY}})
        cloud.api.post_keypair({'keypair': {'name': 'new',
                                            'public_key': NEW_KEY}})
        posted = {
            'lab': cloud.post(cloud.image, merge, name='lab', key_name='lab',
                              adminPass=PASSWORD,
                              personality=[personality(MOTD_PATH, MOTD)]),
            'twin': cloud.post(cloud.image, merge, name='twin'),
            'apart': cloud.post(cloud.image, apart, name='apart')}
        cloud.servers = {name: cloud.wait_status(server, 'ACTIVE')
                         for name, server in posted.items()}
        # nova made up a password for the servers booted without one.
        cloud.passwords = {name: server['adminPass']
                           for name, server in posted.items()}
        yield cloud


def test_guest_boots_with_the_injected_key_file_and_password(cloud):
    lab = cloud.servers['lab']
    seen = cloud.evidence(lab)
    assert KEY in seen['/root/.ssh/authorized_keys']
    assert seen[MOTD_PATH] == [MOTD]
    # The guest's own /etc/shadow holds a hash of the admin password,
    # checked with the system's libcrypt.
    [hashed] = seen['root-hash']
    assert nova_base.verify_sha512_crypt(PASSWORD, hashed), hashed
    # A guest booted without them: no key, no file, and the password nova
    # generated for it.
    twin = cloud.evidence(cloud.servers['twin'])
    assert '/root/.ssh/authorized_keys' not in twin
    assert MOTD_PATH not in twin
    [hashed] = twin['root-hash']
    assert nova_base.verify_sha512_crypt(cloud.passwords['twin'], hashed)
    log = cloud.logged()
    assert 'with handler fuse2fs' in log


def test_two_merging_guests_merge_real_memory(cloud):
    lab, twin = cloud.servers['lab'], cloud.servers['twin']
    pids = [cloud.qemu_pid(lab), cloud.qemu_pid(twin)]

    def merged():
        pages = [ksm_state.merging_pages(pid) for pid in pids]
        return min(pages) * PAGE >= MERGED_MIB * 1024 * 1024 and pages
    pages = base.libvirtd.wait_for(
        merged, base.BOOT_TIMEOUT, interval=1,
        what='KSM to merge %d MiB of each guest' % MERGED_MIB)
    assert int(ksm_state.read_ksm('pages_sharing')) > 0
    for pid in pids:
        assert 'ksm_mergeable: yes' in ksm_stat(pid)
    status = cloud.hypervisor.ksm_status()
    named = {g['instance']: g for g in status['guests']}
    for server in (lab, twin):
        assert server['id'] in named, status
        guest = named[server['id']]
        assert guest['project_name'] == 'lab', guest
        assert guest['merging_pages'] > 0, guest
    print('\nmerging pages: lab %d, twin %d' % tuple(pages))


def test_guest_of_a_non_merging_flavor_shares_nothing(cloud):
    apart = cloud.servers['apart']
    xml = base.virsh('dumpxml', cloud.domain_name(apart))
    assert '<nosharepages/>' in xml
    for name in ('lab', 'twin'):
        assert '<nosharepages/>' not in base.virsh(
            'dumpxml', cloud.domain_name(cloud.servers[name]))
    pid = cloud.qemu_pid(apart)
    assert ksm_state.merging_pages(pid) == 0
    assert 'ksm_mergeable: yes' not in ksm_stat(pid)
    status = cloud.hypervisor.ksm_status()
    assert apart['id'] not in {g['instance'] for g in status['guests']}


def test_failed_mandatory_injection_puts_the_server_in_error(cloud):
    # /etc/hostname is a file: nothing can be written under it.
    server = cloud.post(cloud.image, cloud.merge, name='broken',
                        personality=[personality('/etc/hostname/x', 'x')])
    server = cloud.wait_status(server, 'ERROR')
    fault = server['fault']['message']
    assert '/etc/hostname exists but is not a directory' in fault, fault
    assert '\n' not in fault.strip(), fault
    assert cloud.domain_name(server) not in base.our_domains()
    cloud.assert_nothing_left(server)
    left = leftovers(cloud)
    assert not left, left


def test_check_nova_passes_on_this_compute_node(cloud, tmp_path):
    # What an operator runs with nova-compute's Python and nova.conf.
    conf = tmp_path / 'nova.conf'
    conf.write_text('[DEFAULT]\ncompute_driver = %s\n'
                    % base.functional_base.COMPUTE_DRIVER)
    out = base.cli('nova-ksm-inject', 'check', 'nova', '--config-file',
                   str(conf))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(': ', 1) for line in out.stdout.splitlines())
    assert lines['libvirt hook'].startswith('ok'), out.stdout
    assert lines['img_handlers fuse2fs'].startswith('ok'), out.stdout


def test_rebuild_boots_with_the_new_key(cloud):
    lab = cloud.servers['lab']
    cloud.api.post_server_action(lab['id'], {'rebuild': {
        'imageRef': cloud.image, 'key_name': 'new'}})
    cloud.wait_status(lab, 'ACTIVE')
    seen = cloud.evidence(lab, until=lambda found: KEY not in found.get(
        '/root/.ssh/authorized_keys', [KEY]))
    assert NEW_KEY in seen['/root/.ssh/authorized_keys']


def test_delete_releases_everything(cloud):
    for server in cloud.servers.values():
        domain = cloud.domain_name(server)
        cloud.delete(server)
        assert domain not in base.our_domains()
    # The hook released them: no guest of ours is counted any more.
    status = cloud.hypervisor.ksm_status()
    ids = {s['id'] for s in cloud.servers.values()}
    assert not ids & {g['instance'] for g in status['guests']}
    assert not ids & {g.get('instance') for g in status['hook_guests']}
    left = leftovers(cloud)
    assert not left, left
    assert base.our_domains() == []


def files_under(path):
    """Every file (journal, work directory entry) below ``path``."""
    return [os.path.join(root, name) for root, _dirs, names in os.walk(path)
            for name in names]


def leftovers(cloud):
    """What an injection left in the state dir, journals with their
    records (which image, handler and steps were not undone): a record
    is kept when unwinding failed, and names the step that did."""
    found = files_under(os.path.join(cloud.tmp, 'inject-state'))
    return {path: open(path).read() if path.endswith('.json') else ''
            for path in found}


def ksm_stat(pid):
    with open('/proc/%d/ksm_stat' % pid) as f:
        return f.read()
