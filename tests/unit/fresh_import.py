"""What importing one module loads, seen from a fresh interpreter."""

import subprocess
import sys


def modules_loaded(module, prefixes):
    """Sorted names in ``sys.modules`` starting with any of ``prefixes``
    after ``import module`` in a new Python process."""
    code = ('import sys; import %s; print("\\n".join(sorted('
            'm for m in sys.modules if m.startswith(%r))))'
            % (module, tuple(prefixes)))
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True).stdout
    return out.split()
