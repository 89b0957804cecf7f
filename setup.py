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
* The service's protobuf and gRPC modules (with ``.pyi`` stubs) are generated
  from ``proto/pyomni/v1/*.proto`` into ``pyomni/v1/`` on every build, editable
  or not, so generated code is never committed and never stale.
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

MODULES = ["geo", "ledger", "router", "flash", "protowire"]      # order = dependency order
PXD_ONLY = ["status"]
PROTOS = ["types", "inventory", "routing", "diagnostics", "selling", "stores"]   # proto/pyomni/v1/<name>.proto


def generate_protos() -> None:
    """Run protoc (from grpcio-tools) over proto/ into pyomni/v1/, skipping up-to-date output."""
    out = ROOT / "pyomni" / "v1"
    sources = [ROOT / "proto" / "pyomni" / "v1" / f"{name}.proto" for name in PROTOS]
    if not sources[0].exists():        # an sdist without proto/ ships the generated code instead
        return
    targets = [out / f"{name}_pb2.py" for name in PROTOS]
    newest_source = max(p.stat().st_mtime for p in sources + [Path(__file__)])
    if all(t.exists() and t.stat().st_mtime >= newest_source for t in targets):
        return
    from grpc_tools import protoc  # a build requirement, imported only when generating

    include = Path(protoc.__file__).parent / "_proto"   # well-known types
    out.mkdir(exist_ok=True)
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={ROOT}", f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}", *map(str, sources)]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on proto/pyomni/v1")
    (out / "__init__.py").write_text('"""Generated from proto/pyomni/v1 by setup.py; do not edit or commit."""\n')
    (out / "py.typed").touch()


generate_protos()


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
