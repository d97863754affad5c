"""Compiled artefacts on disk: manifests, file digests, the checkpoint fingerprint, engine keys and parity marks.

An ONNX export folder holds ``manifest.json`` (what was exported, from which weights, with which shape profile and
precision), the graphs (``vision.onnx``, ``embed.onnx``, ``decoder.onnx``, each with its ``.onnx.data``) and, once
the parity gate ran, ``verify.json``. A TensorRT folder holds ``engine.json`` (the engine key and its files), one
``.plan`` per graph, ``timing.cache`` and ``verify.json``.

Nothing here builds anything: a loader compares keys and digests and raises a typed error that names the
difference and the command that rebuilds.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ..digests import file_sha256
from ..errors import CompiledModelError, EngineKeyMismatch, ParityError
from ..fileio import write_json
from ..model.checkpoint import CheckpointFiles

FORMAT = "rgpt4d-compiled"
FORMAT_VERSION = 1
GRAPHS = ("vision", "embed", "decoder")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8", "int4")
# How every JSON file of a compiled folder is written (`rgpt4d_sdk.fileio.write_json`): keys sorted, the folder
# created if needed, and the numbers of a parity report written even when they are NaN.
MANIFEST_JSON = {"sort_keys": True, "allow_nan": True, "mkdir": True}


# ------------------------------------------------------------------------------------------------ digests
def checkpoint_fingerprint(files: CheckpointFiles) -> str:
    """sha256 over every weight file and config of a checkpoint (what a compiled graph bakes in).

    The tokenizer is not part of it: the runtime reads it from the checkpoint each time."""
    h = hashlib.sha256()
    parts: List[Tuple[str, Path]] = [("config.json", files.root / "config.json")]
    for sub in (files.vision_tower, files.mm_projector, files.llm):
        parts.append((f"{sub.folder.name}/config.json", sub.folder / "config.json"))
        parts += [(f"{sub.folder.name}/{w.path.name}", w.path) for w in sub.files]
    for name, path in parts:
        h.update(f"{name}:{path.stat().st_size}:{file_sha256(path)}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ manifests
def read_json(path: Path, what: str, rebuild: str) -> Dict[str, Any]:
    """A JSON file of a compiled folder, checked: CompiledModelError (with the ``rebuild`` command) when it is
    missing, not JSON, not an rgpt4d-sdk ``what``, or of another format version."""
    if not path.is_file():
        raise CompiledModelError(f"{path} is missing; {what} is not complete. Rebuild it: {rebuild}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CompiledModelError(f"{path} is not valid JSON ({e}); rebuild it: {rebuild}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CompiledModelError(f"{path} is not an rgpt4d-sdk {what} (format {data.get('format')!r}); {rebuild}")
    if data.get("format_version") != FORMAT_VERSION:
        raise CompiledModelError(
            f"{path} has format version {data.get('format_version')}, this SDK reads {FORMAT_VERSION}; {rebuild}"
        )
    return data


def describe_files(folder: Path, names: Iterable[str]) -> Dict[str, Dict[str, Any]]:
    """{file name: {"bytes", "sha256"}} of ``names`` in ``folder``: what a manifest records so `check_files` can
    refuse a truncated or altered file."""
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": file_sha256(folder / n)} for n in sorted(names)}


def check_files(folder: Path, files: Mapping[str, Mapping[str, Any]], rebuild: str) -> None:
    """Every listed file exists with its size and sha256 (truncated or altered files are refused)."""
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            raise CompiledModelError(f"{path} is missing; rebuild the folder: {rebuild}")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise CompiledModelError(
                f"{path} has {size} bytes but was written with {meta['bytes']} (truncated or replaced); "
                f"rebuild it: {rebuild}"
            )
        if file_sha256(path) != meta["sha256"]:
            raise CompiledModelError(f"{path} does not match its recorded sha256 (corrupt); rebuild it: {rebuild}")


def files_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """One digest of a folder's recorded files (what a parity mark certifies)."""
    return hashlib.sha256(json.dumps(
        {k: v["sha256"] for k, v in sorted(files.items())}, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ keys
KEY_HELP = {
    "weights": "the checkpoint the engine was built from (weights and configs)",
    "precision": "the numeric precision",
    "profile": "the shape profile (frames, batch, sequence length)",
    "tensorrt": "the TensorRT version",
    "compute_capability": "the GPU compute capability",
    "onnx": "the ONNX export it was built from",
    "format_version": "the rgpt4d-sdk compiled format",
    "tf32": "TF32 math in fp32 layers (engines are built with it off)",
}


def key_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> List[str]:
    """Human-readable lines, one per differing key part ('' when equal)."""
    lines = []
    for part in expected:
        if part in found and found[part] != expected[part]:
            lines.append(f"{part} ({KEY_HELP.get(part, part)}): engine has {found[part]!r}, "
                         f"this run needs {expected[part]!r}")
        elif part not in found:
            lines.append(f"{part} ({KEY_HELP.get(part, part)}): not recorded in the engine")
    return lines


def require_key(where: Path, expected: Mapping[str, Any], found: Mapping[str, Any], rebuild: str) -> None:
    """EngineKeyMismatch listing every part of ``found`` that differs from ``expected`` (checkpoint, export, versions,
    GPU, precision, profile), with the command that rebuilds (``rebuild``); nothing when they are equal."""
    diffs = key_differences(expected, found)
    if diffs:
        raise EngineKeyMismatch(
            f"{where} was built for something else and is never rebuilt implicitly:\n  - " + "\n  - ".join(diffs)
            + f"\nRebuild it explicitly: {rebuild}"
        )


# ------------------------------------------------------------------------------------------------ parity marks
def write_verdict(folder: Path, target: str, report: Mapping[str, Any]) -> None:
    """Record a parity report for one target (e.g. "onnxruntime:cpu", "tensorrt"); other targets' reports stay."""
    path = Path(folder) / "verify.json"
    reports: Dict[str, Any] = {}
    if path.is_file():
        try:
            reports = dict(json.loads(path.read_text()).get("reports", {}))
        except (OSError, ValueError, AttributeError):
            reports = {}
    reports[target] = {"written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **report}
    write_json(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "reports": reports}, **MANIFEST_JSON)


def require_verified(folder: Path, target: str, digest: str, weights: str, verify_cmd: str,
                     force: bool) -> Optional[dict]:
    """Refuse an artefact that has not passed the parity gate on ``target`` for exactly these files and weights,
    unless forced."""
    path = Path(folder) / "verify.json"
    if force:
        return None
    hint = f"run `{verify_cmd}` (or load with force=True to skip the gate)"
    if not path.is_file():
        raise ParityError(f"{folder} has not been through the parity gate; {hint}.")
    report = read_json(path, "parity report", verify_cmd).get("reports", {}).get(target)
    if report is None:
        raise ParityError(f"{folder} has no parity report for {target}; {hint}.")
    if report.get("files_digest") != digest:
        raise ParityError(f"{path} certifies other files than {folder} now holds; {hint}.")
    if report.get("weights") != weights:
        raise ParityError(f"{path} was checked against another checkpoint; {hint}.")
    if not report.get("passed"):
        failed = ", ".join(report.get("failed", [])) or "see the report"
        raise ParityError(
            f"{folder} FAILED the parity gate on {target} ({failed}); it is not valid. Rebuild it, or load with "
            "force=True to use it anyway."
        )
    return report
