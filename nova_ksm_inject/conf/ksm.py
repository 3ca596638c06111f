"""``[ksm]`` options (filled in by the KSM work)."""

from oslo_config import cfg

ksm_group = cfg.OptGroup('ksm', title='Kernel Samepage Merging')

ksm_opts = []


def register_opts(conf):
    conf.register_group(ksm_group)
    conf.register_opts(ksm_opts, group=ksm_group)


def list_opts():
    return {ksm_group: ksm_opts}
