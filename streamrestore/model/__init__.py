"""The InstantRestore restorer: shared-image attention, per-identity reference cache, checkpoints.

Public entry points::

    restorer = load_model("lite" | "instantrestore" | "<file>.safetensors" | "<ckpt>.pt", device="auto")
    cache = restorer.encode_references(refs)          # (N, 3, R, R) in [0, 1], once per identity
    out = restorer.restore(faces, [cache, None, ...])  # (B, 3, R, R) in [0, 1], every frame
"""
from streamrestore.model.attention import AttentionMap, LayerReferences, ReferenceBatch, SharedImageAttnProcessor
from streamrestore.model.cache import ReferenceCache, reference_key
from streamrestore.model.checkpoint import (
    read_model_file,
    read_official_checkpoint,
    save_restorer,
    write_official_checkpoint,
)
from streamrestore.model.config import PROMPT, FreeU, LoraSettings, RestorerConfig, paper_config, tiny_config
from streamrestore.model.packing import fit_cache, pack_caches, pack_kv
from streamrestore.model.registry import load_instantrestore_net, load_model
from streamrestore.model.restorer import InstantRestoreNet, InstantRestorer

__all__ = [
    "AttentionMap", "FreeU", "InstantRestoreNet", "InstantRestorer", "LayerReferences", "LoraSettings", "PROMPT",
    "ReferenceBatch", "ReferenceCache", "RestorerConfig", "SharedImageAttnProcessor", "fit_cache",
    "load_instantrestore_net", "load_model", "pack_caches", "pack_kv", "paper_config", "read_model_file",
    "read_official_checkpoint", "reference_key", "save_restorer", "tiny_config", "write_official_checkpoint",
]
