"""Registration helpers shared by the option modules."""

import copy

from oslo_config import cfg


def group_name(group):
    if group is None:
        return 'DEFAULT'
    return getattr(group, 'name', group)


def register_missing(conf, opts, group=None):
    """Register ``opts`` in ``group`` unless an option of that name exists.

    nova defines these names itself; when nova registered them first we keep
    nova's definition (same name, same meaning) instead of raising
    DuplicateOptError over a different help text. When nova registers them
    after us, ours gives way to nova's (:class:`_YieldsToNova`).
    """
    name = group_name(group)
    if name != 'DEFAULT':
        conf.register_group(cfg.OptGroup(name) if isinstance(group, str)
                            else group)
    for opt in opts:
        if _is_registered(conf, opt.dest, name):
            continue
        conf.register_opt(_yielding(opt),
                          group=None if name == 'DEFAULT' else name)


class _YieldsToNova:
    """Mixin for our registration of an option nova defines too.

    oslo.config compares an option registered again with the one it holds
    (``held != new``) and raises DuplicateOptError when any attribute
    differs, help text included. nova registers its definitions when
    ``nova.conf`` is first imported; when anything imported us before
    that, ours takes nova's definition (default, help...) and answers
    "equal", so nova's import goes on with nova's meaning in force, as
    when nova came first. Another type under the same name still raises.
    """

    _nova_type = None

    def __ne__(self, other):
        if type(other) is self._nova_type and other.name == self.name:
            self.__dict__.update(vars(other))
            return False
        return super().__ne__(other)

    def __eq__(self, other):
        unequal = self.__ne__(other)
        return unequal if unequal is NotImplemented else not unequal

    __hash__ = cfg.Opt.__hash__


_YIELDING_TYPES = {}


def _yielding(opt):
    """A copy of ``opt`` that yields to nova's definition (the module's
    own object stays as written: the sample and other ConfigOpts use it)."""
    kind = type(opt)
    if kind not in _YIELDING_TYPES:
        _YIELDING_TYPES[kind] = type('Nova' + kind.__name__,
                                     (_YieldsToNova, kind),
                                     {'_nova_type': kind})
    held = copy.copy(opt)
    held.__class__ = _YIELDING_TYPES[kind]
    return held


def _is_registered(conf, dest, group_name):
    if group_name == 'DEFAULT':
        return dest in conf._opts
    group = conf._groups.get(group_name)
    return group is not None and dest in group._opts
