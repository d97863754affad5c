"""What the compiled backends share: checks at load (manifest, files, engine key, parity mark), the host side of a
query (preprocessing, media fusion, greedy decoding) and the shape profile.

A backend supplies a `GraphRunner`: three calls on torch tensors (on the runner's device) that run the compiled
vision, embedding and decoder graphs. Everything else is the same code as the torch engine (`PromptedEngine`,
`greedy_decode`, `fuse_embeddings`), so a difference in answers can only come from the graphs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..engine.generate import Generation, greedy_decode, sync_device
from ..engine.prompted import PreparedQuery, PromptedEngine
from ..errors import CheckpointError, CompiledModelError, ShapeProfileError
from ..model.checkpoint import read_checkpoint
from ..model.nvila import fuse_embeddings, load_tokenizer, special_token_id
from ..model.processor import preprocess_images
from ..model.spec import ModelSpec
from .artifacts import check_files, checkpoint_fingerprint, files_digest, read_json, require_key, require_verified
from .onnx_export import ShapeProfile


class GraphRunner:
    """Runs the three graphs. Tensors in and out live on ``device``; embeddings are in ``dtype``."""

    device: torch.device
    dtype: torch.dtype
    target: str  # what the parity mark is recorded for, e.g. "onnxruntime:cpu", "tensorrt"

    def vision(self, pixels: torch.Tensor, times_s: torch.Tensor, time_mask: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float32, (N,) float32, (N,) float32 -> (N, T, D)."""
        raise NotImplementedError

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 -> (B, L, D)."""
        raise NotImplementedError

    def decode(self, inputs_embeds, attention_mask, position_ids, past: List[torch.Tensor]
               ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """-> ((B, V) float32 logits of the last position, present keys/values)."""
        raise NotImplementedError


def load_manifest(folder: Path, model_hint: str = "MODEL") -> Dict[str, Any]:
    """The manifest.json of an ONNX export folder; CompiledModelError (with the export command, ``model_hint`` as its
    model) when the folder or the file is missing, not JSON, or of another format or format version."""
    rebuild = f"rgpt4d-sdk export onnx --model {model_hint} --out {folder}"
    if not Path(folder).is_dir():
        raise CompiledModelError(f"compiled folder {folder} does not exist; create it with: {rebuild}")
    return read_json(Path(folder) / "manifest.json", "ONNX export", rebuild)


class CompiledEngine(PromptedEngine):
    """An engine whose networks are compiled graphs; tokenizer and configs come from the checkpoint folder."""

    def __init__(self, model_path, folder: Path, manifest: Dict[str, Any], runner: GraphRunner, force: bool = False,
                 max_frames: Optional[int] = None, prompt=None, max_new_tokens=None, verify_cmd: str = "",
                 **ignored: Any) -> None:
        if ignored:
            raise CompiledModelError(f"unknown options for a compiled engine: {sorted(ignored)}.")
        files = read_checkpoint(model_path)
        self.folder, self.manifest, self.runner = Path(folder), manifest, runner
        self.weights = checkpoint_fingerprint(files)
        spec = ModelSpec.from_configs(files.config, files.vision_tower.config, files.mm_projector.config,
                                      files.llm.config, files.preprocessor)
        self.profile = ShapeProfile.from_dict(manifest["profile"])
        llm = manifest["llm"]
        self.num_layers, self.num_kv, self.head_dim = llm["num_layers"], llm["num_kv_heads"], llm["head_dim"]
        frames = max_frames or min(max(spec.num_video_frames, 16), self.profile.max_images - 1)
        if frames + 1 > self.profile.max_images:
            raise ShapeProfileError(
                f"max_frames {frames} needs {frames + 1} images per query but {folder} was built for at most "
                f"{self.profile.max_images}; re-export with --num-frames {frames}."
            )
        self._setup_prompting(spec, load_tokenizer(files), llm["context_length"], frames, prompt, max_new_tokens)
        self.image_token_id = special_token_id(self.tokenizer, "<image>")
        newline = self.tokenizer.encode("\n", add_special_tokens=False)
        if len(newline) != 1:
            raise CheckpointError(f"the tokenizer encodes '\\n' as {newline}; NVILA needs a single newline token.")
        self.newline_id = newline[0]
        self.verify_report = require_verified(self.folder, runner.target, files_digest(manifest["files"]),
                                              self.weights, verify_cmd, force)
        self.engine_id = f"{runner.target}:{manifest['precision']}:{self.folder.name}"

    @staticmethod
    def check_export(model_path, folder: Path, manifest: Dict[str, Any], check_weights: bool = True) -> None:
        """Files intact and built from these weights, else a typed error naming the rebuild command.
        (The parity gate skips the weights check so that it can measure, and record, how far off they are.)"""
        rebuild = f"rgpt4d-sdk export onnx --model {model_path} --out {folder}"
        check_files(Path(folder), manifest["files"], rebuild)
        if not check_weights:
            return
        weights = checkpoint_fingerprint(read_checkpoint(model_path))
        require_key(Path(folder), {"weights": weights}, {"weights": manifest["source"]["weights"]},
                    f"{rebuild} (into an empty folder)")

    # ------------------------------------------------------------------------------------------ graphs
    def check_profile(self, prep: PreparedQuery) -> None:
        """ShapeProfileError when a prepared query has more images, or needs more LLM positions (prompt + answer),
        than the shape profile the graphs were built for."""
        n = len(prep.images)
        if n > self.profile.max_images:
            raise ShapeProfileError(
                f"query {prep.query.id or ''} has {n} images but {self.folder} was built for at most "
                f"{self.profile.max_images}; sample fewer frames or re-export with --num-frames {n - 1}."
            )
        need = self.positions(prep) + prep.max_new_tokens
        if need > self.profile.max_seq:
            raise ShapeProfileError(
                f"query {prep.query.id or ''} needs {need} LLM positions but {self.folder} was built for at most "
                f"{self.profile.max_seq}; shorten the question or re-export with --max-seq {need}."
            )

    def image_embeddings(self, prep: PreparedQuery) -> torch.Tensor:
        """(N, T, D) visual embeddings of a query's images (SigLIP, TPE and projector in one graph)."""
        dev = self.runner.device
        pixels = preprocess_images(prep.images, self.spec).to(dev, torch.float32)
        mask = torch.isfinite(prep.image_times)
        times = torch.where(mask, prep.image_times, 0.0).to(dev, torch.float32)
        return self.runner.vision(pixels, times, mask.to(dev, torch.float32))

    def fused_embeddings(self, prep: PreparedQuery, images: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(L, D) input embeddings of one query; vision and projector time are recorded together as 'vision'."""
        t0 = time.perf_counter()
        dev = self.runner.device
        feats = self.image_embeddings(prep) if images is None else images

        def embed(ids: List[int]) -> torch.Tensor:
            return self.runner.embed(torch.tensor([ids], dtype=torch.long, device=dev))[0]

        fused = fuse_embeddings(prep.input_ids, feats, embed, self.image_token_id, self.newline_id).inputs_embeds
        sync_device(dev)
        prep.timings.update(vision=time.perf_counter() - t0, projector=0.0)
        return fused

    def _step(self, inputs_embeds, input_ids, attention_mask, position_ids, past):
        if inputs_embeds is None:
            inputs_embeds = self.runner.embed(input_ids)
        if past is None:
            b = inputs_embeds.shape[0]
            empty = inputs_embeds.new_zeros(b, self.num_kv, 0, self.head_dim)
            past = [empty] * (2 * self.num_layers)
        return self.runner.decode(inputs_embeds, attention_mask, position_ids, past)

    def _run_batch(self, batch: List[PreparedQuery]) -> List[Generation]:
        for prep in batch:
            self.check_profile(prep)
        gens: List[Generation] = []
        step = self.profile.max_batch
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            embeds = [self.fused_embeddings(p) for p in chunk]
            gens += greedy_decode(self._step, embeds, self.stop_ids, max(p.max_new_tokens for p in chunk))
        return gens

    # ------------------------------------------------------------------------------------------ parity probe
    def probe(self, prep: PreparedQuery) -> Tuple[torch.Tensor, Generation]:
        """(N, T, D) visual embeddings and the greedy generation of one query: what the parity gate compares (the
        generation's first logits included), computed once."""
        self.check_profile(prep)
        vis = self.image_embeddings(prep)
        gen = greedy_decode(self._step, [self.fused_embeddings(prep, vis)], self.stop_ids, prep.max_new_tokens)[0]
        return vis, gen


