"""What tiledbsoma does not expose of TileDB, called through TileDB's C API in the library
tiledbsoma loaded: the consolidation of a group's metadata (`consolidate_group_metadata`), and
the array schema each fragment of an array was written with (`fragment_schema_names`).

Every write of a group's metadata adds a file to the group's ``__meta`` folder, and opening
the group reads every one of them. kbagg's journal lives in the experiment's metadata and is
written twice per appended sample, each time whole: after 64 single-sample appends the
experiment held 129 metadata files (342 KB) and opening it took 26.3 ms against 20.0 ms for
the same store with one file (2026-12-07, docs/soma_benchmarks.md). The bytes grow with the
square of the appends, as each write holds every sample's record.
"""

from __future__ import annotations

import ctypes
import glob
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = ["consolidate_group_metadata", "fragment_schema_names"]


def _loaded_libtiledb() -> str | None:
    """Path of the libtiledb this process has loaded (Linux), tiledbsoma's own copy."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    for line in maps.read_text().splitlines():
        path = line.rsplit(" ", 1)[-1]
        name = Path(path).name
        if name.startswith("libtiledb") and not name.startswith("libtiledbsoma") and ".so" in name:
            return path
    return None


def _bundled_libtiledb() -> str | None:
    """libtiledb beside tiledbsoma: in its wheel's ``.libs``/``.dylibs`` or in the env's lib."""
    import tiledbsoma

    package = Path(tiledbsoma.__file__).parent
    patterns = [
        str(package.parent / "tiledbsoma.libs" / "libtiledb-*"),
        str(package / ".dylibs" / "libtiledb*.dylib"),
        str(Path(sys.prefix) / "lib" / "libtiledb.so*"),
        str(Path(sys.prefix) / "lib" / "libtiledb*.dylib"),
    ]
    for pattern in patterns:
        found = [p for p in sorted(glob.glob(pattern)) if "libtiledbsoma" not in p]
        if found:
            return found[0]
    return None


@cache
def _library() -> ctypes.CDLL:
    import tiledbsoma  # noqa: F401  (loads libtiledb)

    path = _loaded_libtiledb() or _bundled_libtiledb()
    if path is None:
        raise OSError("cannot find the libtiledb that tiledbsoma uses")
    lib = ctypes.CDLL(path)
    lib.tiledb_ctx_alloc.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.tiledb_ctx_free.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    for name in ("tiledb_group_consolidate_metadata", "tiledb_group_vacuum_metadata"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_int32
    pointer = ctypes.POINTER(ctypes.c_void_p)
    lib.tiledb_fragment_info_alloc.argtypes = [ctypes.c_void_p, ctypes.c_char_p, pointer]
    lib.tiledb_fragment_info_load.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.tiledb_fragment_info_get_fragment_num.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint32),
    ]
    lib.tiledb_fragment_info_get_array_schema_name.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.POINTER(ctypes.c_char_p),
    ]
    lib.tiledb_fragment_info_free.argtypes = [pointer]
    for name in (
        "tiledb_fragment_info_alloc",
        "tiledb_fragment_info_load",
        "tiledb_fragment_info_get_fragment_num",
        "tiledb_fragment_info_get_array_schema_name",
    ):
        getattr(lib, name).restype = ctypes.c_int32
    lib.tiledb_ctx_get_last_error.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.tiledb_error_message.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
    lib.tiledb_error_free.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    return lib


def _last_error(lib: ctypes.CDLL, ctx: ctypes.c_void_p) -> str:
    error, message = ctypes.c_void_p(), ctypes.c_char_p()
    if lib.tiledb_ctx_get_last_error(ctx, ctypes.byref(error)) != 0 or not error.value:
        return "unknown TileDB error"
    try:
        lib.tiledb_error_message(error, ctypes.byref(message))
        return (message.value or b"unknown TileDB error").decode(errors="replace")
    finally:
        lib.tiledb_error_free(ctypes.byref(error))


@contextmanager
def _context() -> Iterator[tuple[ctypes.CDLL, ctypes.c_void_p]]:
    """The library and a fresh TileDB context, freed on exit."""
    lib = _library()
    ctx = ctypes.c_void_p()
    if lib.tiledb_ctx_alloc(None, ctypes.byref(ctx)) != 0:
        raise RuntimeError("TileDB could not allocate a context")
    try:
        yield lib, ctx
    finally:
        lib.tiledb_ctx_free(ctypes.byref(ctx))


def consolidate_group_metadata(uri: str | Path) -> None:
    """Merge the metadata files of the group at ``uri`` into one and vacuum the rest.

    TileDB's ``tiledb_group_consolidate_metadata`` then ``tiledb_group_vacuum_metadata``: the
    merged file counts only once written, and the files it replaces are ignored from then on,
    so a kill at any point leaves the metadata as it was. The caller holds the store's lock.

    Parameters
    ----------
    uri
        A TileDB group on the local file system, e.g. a SOMA Experiment's folder.

    Raises
    ------
    OSError
        libtiledb cannot be found or loaded.
    RuntimeError
        TileDB refused, with its message.
    """
    with _context() as (lib, ctx):
        target = str(uri).encode()
        for step in ("tiledb_group_consolidate_metadata", "tiledb_group_vacuum_metadata"):
            if getattr(lib, step)(ctx, target, None) != 0:
                raise RuntimeError(f"{step}: {_last_error(lib, ctx)}")


def fragment_schema_names(uri: str | Path) -> set[str]:
    """Names of the array schemas (files of the array's ``__schema`` folder) that the array's
    fragments were written with: TileDB's fragment info, which lists the fragments a read
    uses (committed, not replaced by a consolidation).

    Parameters
    ----------
    uri
        A TileDB array on the local file system, e.g. a SOMA store's ``obs``.

    Raises
    ------
    OSError
        libtiledb cannot be found or loaded.
    RuntimeError
        TileDB refused, with its message.
    """
    with _context() as (lib, ctx):
        info = ctypes.c_void_p()
        if lib.tiledb_fragment_info_alloc(ctx, str(uri).encode(), ctypes.byref(info)) != 0:
            raise RuntimeError(f"tiledb_fragment_info_alloc: {_last_error(lib, ctx)}")
        try:
            if lib.tiledb_fragment_info_load(ctx, info) != 0:
                raise RuntimeError(f"tiledb_fragment_info_load: {_last_error(lib, ctx)}")
            count = ctypes.c_uint32()
            lib.tiledb_fragment_info_get_fragment_num(ctx, info, ctypes.byref(count))
            names = set()
            for fragment in range(count.value):
                name = ctypes.c_char_p()
                get = lib.tiledb_fragment_info_get_array_schema_name
                if get(ctx, info, fragment, ctypes.byref(name)) != 0:
                    raise RuntimeError(f"{get.__name__}: {_last_error(lib, ctx)}")
                names.add(name.value.decode())
            return names
        finally:
            lib.tiledb_fragment_info_free(ctypes.byref(info))
