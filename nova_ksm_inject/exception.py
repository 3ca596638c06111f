"""Exceptions of nova-ksm-inject.

Every error carries a message template filled from keyword arguments (the
os-brick way); messages say what was being done, to what, why, and the fix.
The command line prints ``str(err)`` as one line and exits non-zero.

An error raised in a privsep daemon reaches the caller rebuilt from its
message alone (``cls(*err.args)``), so every class accepts a finished
message as its only positional argument.
"""


class NovaKsmInjectError(Exception):
    """Base of every expected failure."""

    msg_fmt = "An unknown error occurred."
    exit_code = 1

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError):
                message = self.msg_fmt
        super().__init__(message)


class ConfigError(NovaKsmInjectError):
    msg_fmt = "Configuration error: %(reason)s"
    exit_code = 2


class UnknownHandler(ConfigError):
    msg_fmt = ("Unknown image handler(s) %(names)s in img_handlers; valid "
               "handlers in namespace %(namespace)s: %(valid)s. Fix "
               "img_handlers in nova.conf or --handlers.")


class ToolMissing(NovaKsmInjectError):
    msg_fmt = ("Command %(tool)s not found while %(action)s; install the "
               "Debian package %(package)s.")


class CommandFailed(NovaKsmInjectError):
    msg_fmt = "%(action)s failed: %(cmd)s exited %(code)s: %(stderr)s"


class ImageNotFound(NovaKsmInjectError):
    msg_fmt = "Image %(path)s does not exist or is not a regular file."


class ImageRefused(NovaKsmInjectError):
    msg_fmt = "Image %(path)s refused: %(reason)s"


class HandlerUnavailable(NovaKsmInjectError):
    """The handler cannot work on this host (driver, tool or module absent)."""

    msg_fmt = "%(reason)s"


class HandlerFailed(NovaKsmInjectError):
    """The handler tried this image and failed; the chain moves on."""

    msg_fmt = "%(reason)s"


class NoHandlerMounted(NovaKsmInjectError):
    msg_fmt = ("No image handler could mount %(path)s: %(reasons)s")

    def __init__(self, path, reasons=None, attempts=None):
        #: the chain's Attempt records, when raised in this process
        self.attempts = list(attempts or [])
        if reasons is None:  # rebuilt from its message (privsep)
            self.reasons = []
            super().__init__(path)
            return
        self.reasons = list(reasons)
        joined = '; '.join('%s: %s' % (n, r) for n, r in self.reasons)
        super().__init__(path=path, reasons=joined or 'no handler configured')


class UnwindFailed(NovaKsmInjectError):
    msg_fmt = ("Cleaning up the mount of %(image)s failed: %(reason)s"
               "%(after)s. Its journal %(record)s is kept: once the cause "
               "is fixed, run 'nova-ksm-inject cleanup'.")


class StateDirUnsafe(NovaKsmInjectError):
    msg_fmt = ("State directory %(path)s refused: %(reason)s. It holds the "
               "mounts and journals of injections and must be a directory "
               "only its user (root, or nova-compute's) can enter; remove "
               "it or fix [inject] state_dir (root) or user_state_dir.")


class PrivilegeError(NovaKsmInjectError):
    msg_fmt = ("Cannot start the privileged helper for %(what)s: %(reason)s. "
               "Allow this user to run nova-ksm-inject-privsep-helper "
               "through sudo (or nova-rootwrap with the shipped filters) "
               "as the install guide shows and set [%(section)s] "
               "helper_command, or use the default img_handlers "
               "(fuse2fs, guestfs), which need no privilege.")


class GuestPathRefused(NovaKsmInjectError):
    msg_fmt = ("Guest path %(path)s refused: %(reason)s. Nothing is written "
               "outside the guest root.")


class InjectionFailed(NovaKsmInjectError):
    msg_fmt = "Injecting %(what)s into image %(image)s failed: %(reason)s"


class InjectionLimit(NovaKsmInjectError):
    msg_fmt = "%(reason)s"
    exit_code = 2


class NoShadowEntry(NovaKsmInjectError):
    msg_fmt = ("Cannot set the admin password: %(reason)s. Inject it through "
               "cloud-init or a config drive instead.")


class KsmMergeInvalid(NovaKsmInjectError):
    """A ``ksm:merge``/``ksm_merge`` value that is not a boolean."""

    msg_fmt = ("%(key)s=%(value)r in %(where)s is not a boolean; use "
               "%(accepted)s")


class KsmUnavailable(NovaKsmInjectError):
    msg_fmt = ("KSM is not available: %(reason)s. Build the kernel with "
               "CONFIG_KSM or run on the host, not in a container.")


class KsmNotWritable(NovaKsmInjectError):
    msg_fmt = ("Cannot write KSM setting %(knob)s: %(reason)s. Run as root on "
               "the host with /sys writable; nothing was changed.")


class KsmBusy(NovaKsmInjectError):
    msg_fmt = ("The kernel refused to change KSM setting %(knob)s while "
               "pages are shared. Run 'nova-ksm-inject ksm apply --unmerge' "
               "to unmerge first (guests then use more memory for a while).")
