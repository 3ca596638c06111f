"""The hook's expat-built element tree answers as ElementTree does."""

import xml.etree.ElementTree as ElementTree

import pytest

from nova_ksm_inject.ksm import domainxml

NS = 'http://openstack.org/xmlns/libvirt/nova/1.1'
XML = """<domain type='kvm'>
  <name>instance-0000000a</name>
  <memory unit='KiB'>524288</memory>
  <memoryBacking><nosharepages/></memoryBacking>
  <metadata>
    <nova:instance xmlns:nova="%s">
      <nova:owner><nova:project uuid="p-1">lab</nova:project></nova:owner>
    </nova:instance>
    <other:x xmlns:other="urn:x"/>
  </metadata>
</domain>""" % NS

PATHS = ['name', 'memory', 'memoryBacking/nosharepages', 'memoryBacking/x',
         'metadata/*', '{%s}instance' % NS,
         'metadata/{%s}instance/{%s}owner/{%s}project' % (NS, NS, NS)]


@pytest.mark.parametrize('path', PATHS)
def test_same_answers_as_elementtree(path):
    ours, theirs = domainxml.fromstring(XML), ElementTree.fromstring(XML)
    assert [(e.tag, dict(e.attrib), (e.text or '').strip())
            for e in ours.findall(path)] == [
        (e.tag, dict(e.attrib), (e.text or '').strip())
        for e in theirs.findall(path)]
    assert ours.findtext(path) == theirs.findtext(path)
    assert (ours.find(path) is None) == (theirs.find(path) is None)


def test_attributes_and_root():
    root = domainxml.fromstring(XML)
    assert (root.tag, root.get('type'), root.get('missing', 'd')) == (
        'domain', 'kvm', 'd')
    assert root.find('memory').get('unit') == 'KiB'


@pytest.mark.parametrize('text', ['<not xml', '', '<a></b>'])
def test_not_well_formed_is_a_value_error(text):
    with pytest.raises(ValueError, match='not well formed'):
        domainxml.fromstring(text)
