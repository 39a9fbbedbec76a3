"""Stand-in for ``slicer.packaging``, Slicer's package manager since Slicer 5.12: pip_ensure with its signature,
recorded. Under an older Slicer version (SLICER_STANDIN_VERSION) it is absent, as in Slicer 5.10."""

from pathlib import Path

import slicer

if (slicer.app.majorVersion, slicer.app.minorVersion) < (5, 12):
    raise ImportError("No module named 'slicer.packaging' (Slicer 5.12 and later)")

#: pip_ensure's arguments, call by call: (requirements, {keyword: value}, text of the constraints file).
ensured = []


def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
               requester=None, skip_in_testing=True, show_progress=True):
    ensured.append((requirements, {"constraints": constraints, "skip_packages": skip_packages,
                                   "prompt_install": prompt_install, "prompt_restart": prompt_restart,
                                   "requester": requester, "skip_in_testing": skip_in_testing,
                                   "show_progress": show_progress},
                    Path(constraints).read_text() if constraints else None))
