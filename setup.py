"""Build of pyomni's native core.

Metadata lives in pyproject.toml; this file only lists the extensions.

* Each ``core/<name>.pyx`` becomes ``pyomni._core.<name>``; every one is listed
  by hand (no globbing) so adding a module is a deliberate act.
* Cython resolves ``cimport pyomni._core.ledger`` by looking for
  ``pyomni/_core/ledger.pxd`` on its include path, but our ``.pxd`` files live in
  ``core/``. We stage them into ``build/cython_include/pyomni/_core/`` (a tree
  shaped like the installed package) before cythonizing, and install them into
  the package too so downstream Cython code can cimport them.
* Directives are set once here: bounds and wraparound checks are off, and
  ``PYOMNI_DEBUG=1`` turns them (and line tracing) back on.
"""

import os
import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent.resolve()
CORE = ROOT / "core"
STAGE = ROOT / "build" / "cython_include"
DEBUG = os.environ.get("PYOMNI_DEBUG") == "1"

MODULES = ["geo", "ledger", "router"]      # order = dependency order
PXD_ONLY = ["status"]


def stage_pxd() -> Path:
    """Copy core/*.pxd into an include tree shaped like the installed package."""
    pkg = STAGE / "pyomni" / "_core"
    pkg.mkdir(parents=True, exist_ok=True)
    for marker in (STAGE / "pyomni" / "__init__.pxd", pkg / "__init__.pxd"):
        marker.touch()
    for name in MODULES + PXD_ONLY:
        src = CORE / f"{name}.pxd"
        dst = pkg / f"{name}.pxd"
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
        # ship the declarations with the package as well
        installed = ROOT / "pyomni" / "_core" / f"{name}.pxd"
        if not installed.exists() or installed.read_bytes() != src.read_bytes():
            shutil.copyfile(src, installed)
    return STAGE


directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "linetrace": DEBUG,
}

extensions = [
    Extension(
        f"pyomni._core.{name}",
        [f"core/{name}.pyx"],
        extra_compile_args=["-O3", "-fno-strict-aliasing"] if not DEBUG else ["-O0", "-g"],
        define_macros=[("CYTHON_TRACE_NOGIL", "1")] if DEBUG else [],
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=[str(stage_pxd())],
        compiler_directives=directives,
        build_dir="build/cython",
    ),
)
