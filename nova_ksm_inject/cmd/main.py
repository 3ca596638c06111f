"""``nova-ksm-inject``: inject data into guest images and manage KSM.

A thin console script: parse arguments, load nova.conf, call the library,
turn its exceptions into one line on stderr and an exit code.
"""

import argparse
import gc
import sys

from nova_ksm_inject.cmd import base
from nova_ksm_inject.cmd import check
from nova_ksm_inject.cmd import disk
from nova_ksm_inject.cmd import ksm

DESCRIPTION = """\
Inject data (ssh key, network config, metadata, admin password, files)
into guest disk images through the ordered chain of image handlers
configured in nova.conf (img_handlers, use_cow_images), and make Kernel
Samepage Merging pay off on this hypervisor.

Configuration is read from /etc/nova/nova.conf unless --config-file (or
NOVA_KSM_INJECT_CONFIG_FILES, colon-separated) says otherwise.
"""


def build_parser():
    parent = base.config_parent()
    parser = argparse.ArgumentParser(
        prog=base.PROG, description=DESCRIPTION, parents=[parent],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    disk.add_parsers(sub, parent)
    ksm.add_parser(sub, parent)
    check.add_parser(sub, parent)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    base.on_sigterm()
    # A command that must import something before our options are
    # registered (check nova: nova's, as in nova-compute).
    before_config = getattr(args, 'before_config', None)
    if before_config is not None:
        before_config(args)
    # Only now the heavy imports (oslo.config, oslo.log): --help and
    # usage errors answer without them.
    from nova_ksm_inject.cmd import common

    def _run():
        common.load_config_for(args)
        common.init_privsep()
        return args.func(args)

    return common.run(_run)


def console():
    """The ``nova-ksm-inject`` console script: :func:`main`, in a process
    that ends with it.

    The cyclic garbage collector is off: a run lasts seconds at most and
    makes little cyclic garbage, while each collection walks the hundred
    thousand objects the imports made (~10 ms in all). Freezing them
    before exit spares the interpreter's last collections (~20 ms).
    """
    gc.disable()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == '__main__':
    console()
