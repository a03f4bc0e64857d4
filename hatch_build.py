"""Build hook: compile mailban/core/_speedups.c into the wheel (or, for an editable install,
next to its source), with the C compiler and flags of the Python that builds it.

The module is optional: mailban runs the same Python code without it (slower; see
bench/README.md). So a machine without a C compiler or Python headers still gets a working
install, with a warning here; `mailban check` and the test suite say whether it is in use.
Set MAILBAN_BUILD_PURE=1 to build without it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("mailban/core/_speedups.c")


def compile_speedups(root: Path, out: Path) -> str | None:
    """Compile the module to `out`; the compiler's complaint, or None when it worked."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    # CPPFLAGS, CFLAGS and LDFLAGS from the environment are honoured, as setuptools does: a Debian
    # build (dpkg-buildflags) passes its hardening flags there. -O2 when CFLAGS says nothing.
    env = {name: shlex.split(os.environ.get(name, "")) for name in ("CPPFLAGS", "CFLAGS", "LDFLAGS")}
    argv = [*cc, *env["CPPFLAGS"], *(env["CFLAGS"] or ["-O2"]), "-fPIC", "-shared", "-Wall", f"-I{include}",
            str(root / SOURCE), *env["LDFLAGS"], "-o", str(out)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except OSError as exc:
        return f"{argv[0]}: {exc}"
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"{argv[0]} exited {proc.returncode}")


class SpeedupsHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("MAILBAN_BUILD_PURE") == "1":
            return
        root = Path(self.root)
        name = "_speedups" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        if version == "editable":
            # The editable install imports mailban from the source tree: the module goes there.
            target = root / SOURCE.parent / name
            error = compile_speedups(root, target)
        else:
            target = Path(tempfile.mkdtemp(prefix="mailban-build-")) / name
            error = compile_speedups(root, target)
            if error is None:
                build_data["force_include"][str(target)] = f"mailban/core/{name}"
        if error is not None:
            print(f"mailban: WARNING: C speedups not built, mailban will run its Python code "
                  f"alone (install gcc and the Python headers for them):\n{error}", file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
