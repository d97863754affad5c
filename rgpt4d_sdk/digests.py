"""Content digests: of an image's pixels (`content_hash`, the key of the vision cache) and of a file's bytes
(`file_sha256`, with the cache that lets a 16 GB checkpoint be hashed once).

A neutral module: `Frame.digest` (types), the engine caches and the compiled-artefact checks all hash through it,
and it imports no package of the SDK (only `cache` for the cache folder and `fileio` to write the cache file).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Iterator

import numpy as np

from .fileio import load_json, write_json


def content_hash(image: np.ndarray) -> str:
    """A 128-bit digest of an image's pixels and shape (blake2b; ~1 GB/s)."""
    a = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(a.data)
    return h.hexdigest()


def _cache_file() -> Path:
    from .cache import cache_root

    return cache_root() / "sha256.json"


_VERIFY = contextvars.ContextVar("rgpt4d_verify_digests", default=False)


@contextlib.contextmanager
def verify_digests(enabled: bool = True) -> Iterator[None]:
    """Within this block every `file_sha256` reads the file's bytes again instead of trusting the digest cache
    (``--verify-digests``, ``Engine.from_pretrained(..., verify_digests=True)``; `export verify` always does). The
    fresh digests are written back to the cache."""
    token = _VERIFY.set(bool(enabled) or _VERIFY.get())
    try:
        yield
    finally:
        _VERIFY.reset(token)


def file_sha256(path: Path, use_cache: bool = True) -> str:
    """sha256 of a file's bytes. Cached by (real path, size, mtime, inode) so a 16 GB checkpoint is read once.

    What the cache trusts: that a file whose size, mtime (ns) and inode are unchanged has unchanged bytes. A file
    rewritten in place with its mtime restored (``touch -d``, some copy tools) defeats that; inside
    `verify_digests` (and with ``use_cache=False``) the bytes are always hashed."""
    path = Path(path)
    st = path.stat()
    key = os.path.realpath(path)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    cache_path = _cache_file()
    cache: Dict[str, Any] = {}
    if use_cache and not _VERIFY.get() and cache_path.is_file():
        cache = load_json(cache_path, {})
        hit = cache.get(key)
        if isinstance(hit, dict) and hit.get("stamp") == stamp:
            return str(hit["sha256"])
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    if use_cache:
        if _VERIFY.get() and cache_path.is_file():  # refresh this entry; keep the others
            cache = load_json(cache_path, {})
        cache[key] = {"stamp": stamp, "sha256": digest}
        try:
            write_json(cache_path, cache, sort_keys=True, allow_nan=True, mkdir=True)
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return digest
