"""Registration helpers shared by the option modules."""

from oslo_config import cfg


def group_name(group):
    if group is None:
        return 'DEFAULT'
    return getattr(group, 'name', group)


def register_missing(conf, opts, group=None):
    """Register ``opts`` in ``group`` unless an option of that name exists.

    nova defines these names itself; when nova registered them first we keep
    nova's definition (same name, same meaning) instead of raising
    DuplicateOptError over a different help text.
    """
    name = group_name(group)
    if name != 'DEFAULT':
        conf.register_group(cfg.OptGroup(name) if isinstance(group, str)
                            else group)
    for opt in opts:
        if _is_registered(conf, opt.dest, name):
            continue
        conf.register_opt(opt, group=None if name == 'DEFAULT' else name)


def _is_registered(conf, dest, group_name):
    if group_name == 'DEFAULT':
        return dest in conf._opts
    group = conf._groups.get(group_name)
    return group is not None and dest in group._opts
