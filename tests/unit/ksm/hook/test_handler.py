"""The libvirt hook logic: domain XML, guest records, KSM per policy."""

import dataclasses

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm.hook import handler

XML = """<domain type='qemu'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='MiB'>64</currentMemory>
  %(backing)s
</domain>"""


def domain_xml(name='vm1', uuid='uuid-1', backing=''):
    return XML % {'name': name, 'uuid': uuid, 'backing': backing}


def test_parse_mergeable_domain():
    domain = handler.parse_domain(domain_xml())
    assert domain == handler.Domain(name='vm1', uuid='uuid-1', mergeable=True,
                                 reason='', memory_kib=65536)


@pytest.mark.parametrize('backing,reason', [
    ('<memoryBacking><nosharepages/></memoryBacking>', 'nosharepages'),
    ('<memoryBacking><hugepages/></memoryBacking>', 'huge pages'),
])
def test_parse_unmergeable_domain(backing, reason):
    domain = handler.parse_domain(domain_xml(backing=backing))
    assert not domain.mergeable and reason in domain.reason


NOVA_XML = """<domain type='kvm'>
  <name>instance-0000000a</name>
  <uuid>6f1e9a0c-0000-4000-8000-00000000000a</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/%s">
      <nova:package version="34.0.0"/>
      <nova:name>lab-vm-10</nova:name>
      <nova:owner>
        <nova:user uuid="u-1">student</nova:user>
        <nova:project uuid="aa11aa11aa11aa11aa11aa11aa11aa11"
          >lab</nova:project>
      </nova:owner>
    </nova:instance>
  </metadata>
  <memory unit='KiB'>524288</memory>
</domain>"""


@pytest.mark.parametrize('version', ['1.1', '1.0'])
def test_parse_nova_owner(version):
    domain = handler.parse_domain(NOVA_XML % version)
    assert (domain.instance, domain.project, domain.project_name) == (
        '6f1e9a0c-0000-4000-8000-00000000000a',
        'aa11aa11aa11aa11aa11aa11aa11aa11', 'lab')


def test_parse_foreign_metadata_is_not_nova():
    xml = NOVA_XML.replace('openstack.org/xmlns/libvirt/nova/%s',
                           'example.org/other')
    domain = handler.parse_domain(xml)
    assert (domain.instance, domain.project) == (None, None)
    assert handler.parse_domain(domain_xml()).instance is None


def test_start_records_instance_and_project(run_hook, statedir, tmp_path):
    run_hook('prepare', 'begin', xml=NOVA_XML % '1.1')
    [record] = statedir.guests()
    assert record['instance'] == '6f1e9a0c-0000-4000-8000-00000000000a'
    assert record['project'] == 'aa11aa11aa11aa11aa11aa11aa11aa11'
    assert record['project_name'] == 'lab'


def test_parse_minimal_xml_uses_argv_name():
    domain = handler.parse_domain('<domain/>', 'fromargv')
    assert (domain.name, domain.uuid, domain.mergeable) == (
        'fromargv', 'fromargv', True)


@pytest.fixture
def run_hook(settings, fake_ksm, fake_proc, statedir, tmp_path):
    def _run(op, subop, xml=None, **overrides):
        hook_settings = dataclasses.replace(settings, **overrides)
        hook = handler.Hook(hook_settings, ksm_host.KsmHost(fake_ksm.sysfs),
                            statedir, proc_root=fake_proc.root,
                            run_dir=str(tmp_path / 'run'))
        return hook.handle('vm1', op, subop, xml or domain_xml())
    return _run


LEGACY_METADATA = """</nova:owner>
      <nova:flavor name="lab.maybe" id="7">
        <nova:extraSpecs>
          <nova:extraSpec name="ksm:merge">maybe</nova:extraSpec>
        </nova:extraSpecs>
      </nova:flavor>
      <nova:image uuid="5e1f"><nova:properties>
        <nova:property name="ksm_merge">sometimes</nova:property>
      </nova:properties></nova:image>"""


def test_guest_with_a_bad_ksm_merge_value_is_recorded_unmergeable(
        run_hook, fake_ksm, statedir, caplog):
    # What nova-compute defined for a guest that got ksm:merge=maybe
    # before the driver refused such values: its flavor's extra specs and
    # image properties in nova's metadata, and <nosharepages/>. The hook
    # goes by the XML's memory backing, whatever the values say.
    xml = (NOVA_XML % '1.1').replace(
        '</nova:owner>', LEGACY_METADATA).replace(
        '</metadata>', '</metadata><memoryBacking><nosharepages/>'
                       '</memoryBacking>')
    with caplog.at_level('INFO'):
        result = run_hook('prepare', 'begin', xml=xml)
    assert result.mergeable_guests == 0 and not result.run
    assert fake_ksm.get('run') == '0'
    [record] = statedir.guests()
    assert (record['mergeable'], record['reason']) == (
        False, 'memoryBacking has <nosharepages/>')
    assert 'memoryBacking has <nosharepages/>' in caplog.text


def test_start_runs_ksm_with_static_knobs(run_hook, fake_ksm, statedir):
    result = run_hook('prepare', 'begin', policy='static',
                      pages_to_scan=1234)
    assert result.run and result.mergeable_guests == 1
    assert fake_ksm.get('run') == '1'
    assert fake_ksm.get('pages_to_scan') == '1234'
    assert statedir.event()['generation'] == 1
    assert statedir.saved_ksm()['run'] == 0


def test_release_of_last_guest_stops_ksm(run_hook, fake_ksm, statedir):
    run_hook('prepare', 'begin')
    result = run_hook('release', 'end')
    assert not result.run
    assert fake_ksm.get('run') == '0'
    assert statedir.guests() == []
    assert statedir.event()['kind'] == 'stop'


def test_unmergeable_guest_does_not_start_ksm(run_hook, fake_ksm, statedir):
    xml = domain_xml(backing='<memoryBacking><nosharepages/>'
                             '</memoryBacking>')
    result = run_hook('prepare', 'begin', xml=xml)
    assert result.mergeable_guests == 0 and not result.run
    assert fake_ksm.get('run') == '0'
    assert statedir.guests()[0]['mergeable'] is False


def test_enabled_true_runs_without_guests(run_hook, fake_ksm):
    xml = domain_xml(backing='<memoryBacking><hugepages/></memoryBacking>')
    run_hook('prepare', 'begin', xml=xml, enabled='true')
    assert fake_ksm.get('run') == '1'


def test_other_mergeable_processes_count(run_hook, fake_ksm, fake_proc):
    fake_proc.add(4321, mergeable=True)
    run_hook('prepare', 'begin')
    result = run_hook('release', 'end')
    assert result.run and fake_ksm.get('run') == '1'


def test_started_records_the_qemu_pid(run_hook, statedir, tmp_path):
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'vm1.pid').write_text('4242\n')
    run_hook('prepare', 'begin')
    assert statedir.guests()[0].get('pid') is None
    run_hook('started', 'begin')
    assert statedir.guests()[0]['pid'] == 4242


def test_adaptive_without_tuner_falls_back_to_static(run_hook, fake_ksm,
                                                    caplog):
    run_hook('prepare', 'begin', policy='adaptive', pages_to_scan=555)
    assert fake_ksm.get('pages_to_scan') == '555'
    assert 'nova-ksm-tuner is not running' in caplog.text


def test_adaptive_with_tuner_leaves_the_rate_to_it(run_hook, fake_ksm,
                                                  statedir):
    statedir.write_tuner({'state': 'idle'})
    run_hook('prepare', 'begin', policy='adaptive', pages_to_scan=555)
    assert fake_ksm.get('run') == '1'
    assert fake_ksm.get('pages_to_scan') == '100'


def test_kernel_policy_hands_over_to_the_advisor(run_hook, fake_ksm):
    run_hook('prepare', 'begin', policy='kernel', cpu_budget_percent=15)
    assert fake_ksm.get('advisor_mode') == 'scan-time'
    assert fake_ksm.get('advisor_max_cpu') == '15'
    assert fake_ksm.get('run') == '1'


def test_kernel_policy_without_advisor_is_static(run_hook, fake_ksm,
                                                 caplog):
    import os
    os.unlink(os.path.join(fake_ksm.root, 'advisor_mode'))
    run_hook('prepare', 'begin', policy='kernel', pages_to_scan=321)
    assert fake_ksm.get('pages_to_scan') == '321'
    assert 'no KSM advisor' in caplog.text


def test_ignored_operation_touches_nothing(run_hook, fake_ksm, statedir):
    assert run_hook('start', 'begin') is None
    assert statedir.event()['generation'] == 0


def test_read_only_sysfs_raises_and_changes_nothing(run_hook, fake_ksm,
                                                   monkeypatch):
    import os
    monkeypatch.setattr(os, 'access', lambda path, mode: False)
    with pytest.raises(exception.KsmNotWritable):
        run_hook('prepare', 'begin', policy='static', pages_to_scan=999)
    assert fake_ksm.get('run') == '0'
    assert fake_ksm.get('pages_to_scan') == '100'
