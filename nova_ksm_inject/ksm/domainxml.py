"""A small element tree of a libvirt domain XML, built with expat.

The hook reads a dozen elements of the domain XML at every guest event.
``xml.etree.ElementTree`` builds its tree with the same expat parser but
costs 4 ms of imports, a tenth of the hook's run; this keeps the part of
its interface the hook uses: ``find``/``findtext`` with ``a/b/c`` paths
of child tags (namespaced tags as ``{uri}name``), ``get``, ``text``, and
``children``.
"""

import pyexpat


class Element(object):
    """One XML element: ``tag``, ``attrib``, ``text`` (before the first
    child, as in ElementTree), ``children``."""

    __slots__ = ('tag', 'attrib', 'text', 'children')

    def __init__(self, tag, attrib):
        self.tag = tag
        self.attrib = attrib
        self.text = ''
        self.children = []

    def get(self, name, default=None):
        return self.attrib.get(name, default)

    def find(self, path):
        """The first element at ``path`` (child tags joined by ``/``;
        ``*`` matches any tag), or None."""
        found = self.findall(path)
        return found[0] if found else None

    def findall(self, path):
        nodes = [self]
        for step in _steps(path):
            nodes = [child for node in nodes for child in node.children
                     if step in ('*', child.tag)]
        return nodes

    def findtext(self, path, default=None):
        element = self.find(path)
        return default if element is None else element.text


def _steps(path):
    """``path`` split at the slashes outside ``{namespace URIs}``."""
    steps, step, depth = [], '', 0
    for char in path:
        depth += {'{': 1, '}': -1}.get(char, 0)
        if char == '/' and not depth:
            steps.append(step)
            step = ''
        else:
            step += char
    return steps + [step]


def fromstring(text):
    """Parse ``text``; raises ``ValueError`` for XML that is not well
    formed."""
    parser = pyexpat.ParserCreate(namespace_separator='}')
    top = Element(None, {})
    stack = [top]

    def start(tag, attrib):
        if '}' in tag:
            tag = '{' + tag
        element = Element(tag, attrib)
        stack[-1].children.append(element)
        stack.append(element)

    def end(tag):
        stack.pop()

    def data(text):
        # ElementTree's text: what comes before the first child.
        if not stack[-1].children:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(text, True)
    except pyexpat.ExpatError as err:
        raise ValueError('domain XML is not well formed: %s' % err) from err
    return top.children[0]
