"""The reference packer: the references of a batch of faces as one :class:`ReferenceBatch`.

Every path that runs the shared-image attention packs references here, so the rules of padding
and masking live in one place:

- :func:`pack_caches`: per-face :class:`~streamrestore.model.cache.ReferenceCache` objects
  (inference: ``InstantRestorer.restore``; the compiled backends with a fixed slot count);
- :func:`pack_face_means`: each face's mean reference face, for a detail head that sees
  references (every inference path);
- :func:`pack_kv`: the raw keys/values of one reference pass over every slot of the batch
  (training, per-identity adaptation, the parity tools), with gradients.

Both end in the same masks: ``ref_mask`` (B, N) marks real reference slots (padded ones get
exactly zero attention), and a face without references, or every face when the model was
trained with ``include_input_kv``, also attends to its own tokens (``input_mask``).
"""
from __future__ import annotations

from typing import Sequence

import torch

from streamrestore.model.attention import LayerReferences, ReferenceBatch, value_statistics
from streamrestore.model.cache import ReferenceCache

__all__ = ["fit_cache", "pack_caches", "pack_face_means", "pack_kv"]

#: what a padded reference slot holds, per field (the cache convention: AdaIN std 1, not 0)
_FILL = (("keys", 0.0), ("values", 0.0), ("value_mean", 0.0), ("value_std", 1.0))


def fit_cache(cache: ReferenceCache, layer_names: Sequence[str], device: torch.device,
              dtype: torch.dtype) -> ReferenceCache:
    """``cache`` on ``device`` in ``dtype`` (itself when it already is), checked against the
    shared layers of the network that will use it.

    Raises:
        ValueError: the cache was built for another architecture (other shared layers).
    """
    if tuple(cache.layer_names) != tuple(layer_names):
        raise ValueError("this ReferenceCache was built for a different model architecture; "
                         "encode the references with this restorer")
    return cache.to(device, dtype)


def pack_caches(net, caches: Sequence[ReferenceCache | None], device: torch.device, dtype: torch.dtype,
                slots: int | None = None) -> ReferenceBatch | None:
    """The references of B faces, ``caches[i]`` being face i's identity or None.

    Args:
        net: the :class:`~streamrestore.model.restorer.InstantRestoreNet` that will attend to
            them (its ``shared_layers`` and ``config.include_input_kv``).
        caches: one cache or None per face.
        device, dtype: where the packed tensors live (the caches are moved there).
        slots: None (default): as many slots as the face with the most references, and
            ``ref_mask`` None when no slot is padded; a batch of one identity packs as views
            (no copy). A number: exactly that many slots, always copies and always a
            ``ref_mask`` (the compiled backends need fixed shapes and fixed inputs).

    Returns:
        The :class:`ReferenceBatch`, or None when no face has references (plain self-attention).

    Raises:
        ValueError: a face has more references than ``slots``, or a cache of another model.
    """
    b = len(caches)
    counts = [0 if c is None else c.num_references for c in caches]
    n_max = max(counts, default=0)
    if slots is not None and n_max > slots:
        raise ValueError(f"a face has {n_max} references but only {slots} reference slots were asked for")
    if n_max == 0:
        return None  # every face restores with plain self-attention
    width = n_max if slots is None else slots
    layer_names = net.shared_layers
    moved = [None if c is None else fit_cache(c, layer_names, device, dtype) for c in caches]
    # one identity for the whole batch: views, no copy (not for fixed slots: compiled graphs
    # are built for contiguous inputs, a view would be another input layout)
    same = slots is None and all(c is moved[0] for c in moved)
    layers = {}
    for i, name in enumerate(layer_names):
        if same:
            c = moved[0]
            fields = [t[i].unsqueeze(0).expand(b, *t[i].shape) for t in (c.keys, c.values, c.value_mean, c.value_std)]
        else:
            fields = []
            for attr, fill in _FILL:
                like = next(getattr(c, attr)[i] for c in moved if c is not None)
                rows = []
                for c, n in zip(moved, counts):
                    t = getattr(c, attr)[i] if c is not None else like[:0]
                    if n < width:
                        pad = torch.full((width - n, *like.shape[1:]), fill, device=device, dtype=dtype)
                        t = torch.cat([t, pad])
                    rows.append(t)
                fields.append(torch.stack(rows))
        layers[name] = LayerReferences(*fields)
    # built on the CPU from the counts: deciding the masks reads no device tensor (no sync)
    ref_mask = torch.arange(width)[None, :] < torch.tensor(counts)[:, None]
    return _batch(layers, ref_mask, net.config.include_input_kv, keep_ref_mask=slots is not None, device=device)


def pack_face_means(caches: Sequence[ReferenceCache | None], faces: torch.Tensor) -> torch.Tensor:
    """Each face's mean aligned reference face (B, 3, R, R), on ``faces``' device and dtype.

    A face without references, or whose cache holds no ``face_mean``, gets itself: the stand-in
    the detail head was trained with for "no references".

    Raises:
        ValueError: a count of caches that is not the faces', or a mean of another size.
    """
    if len(caches) != faces.shape[0]:
        raise ValueError(f"got {faces.shape[0]} faces but {len(caches)} caches")
    means = [None if c is None else c.face_mean for c in caches]
    for m in means:
        if m is not None and tuple(m.shape) != tuple(faces.shape[1:]):
            raise ValueError(f"a reference cache's face mean has shape {tuple(m.shape)}, "
                             f"the faces {tuple(faces.shape[1:])}")
    if means and means[0] is not None and all(m is means[0] for m in means):
        return means[0].to(faces.device, faces.dtype).unsqueeze(0).expand_as(faces)  # one identity: a view
    return torch.stack([face if m is None else m.to(faces.device, faces.dtype) for face, m in zip(faces, means)])


def pack_kv(net, kv: dict[str, tuple[torch.Tensor, torch.Tensor]], ref_mask: torch.Tensor) -> ReferenceBatch:
    """The references of B faces from one reference pass over all their ``B * N`` slots.

    Keeps gradients (the training path); the AdaIN statistics are computed here.

    Args:
        net: the :class:`~streamrestore.model.restorer.InstantRestoreNet` (its
            ``shared_layers``, ``config.adain_eps`` and ``config.include_input_kv``).
        kv: :meth:`InstantRestoreNet.reference_kv` of the ``B * N`` slots, face-major (face 0's
            N slots first); padded slots may hold anything (they are masked out).
        ref_mask: (B, N) bool, True for real references; all True (``torch.ones(B, N,
            dtype=torch.bool)``) when every slot is real. The masks are decided on it where it
            is: a CPU mask costs no device sync (and works for ``meta`` K/V).

    Raises:
        ValueError: ``kv`` does not hold B * N references.
    """
    if ref_mask.ndim != 2:
        raise ValueError(f"ref_mask must be (faces, slots), got shape {tuple(ref_mask.shape)}")
    b, n = ref_mask.shape
    layers = {}
    valid, device = None, ref_mask.device
    for name in net.shared_layers:
        k, v = kv[name]
        if k.shape[0] != b * n:
            raise ValueError(f"{k.shape[0]} references do not fill {b} faces x {n} slots")
        if valid is None:
            device = k.device
            valid = ref_mask.to(device)[:, :, None, None]
        k, v = k.reshape(b, n, *k.shape[1:]), v.reshape(b, n, *v.shape[1:])
        mean, std = value_statistics(v.float(), net.config.adain_eps)
        # padded slots: mean 0, std 1 (the cache convention); they get zero attention anyway
        mean = torch.where(valid, mean, torch.zeros_like(mean)).to(v.dtype)
        std = torch.where(valid, std, torch.ones_like(std)).to(v.dtype)
        layers[name] = LayerReferences(k, v, mean, std)
    # the masks are decided on ref_mask where it is (a CPU mask reads no device tensor)
    return _batch(layers, ref_mask, net.config.include_input_kv, keep_ref_mask=False, device=device)


def _batch(layers: dict, ref_mask: torch.Tensor, include_input_kv: bool, keep_ref_mask: bool,
           device: torch.device) -> ReferenceBatch:
    """The masks for ``ref_mask`` (B, N), then the batch, masks on ``device``.

    A face without references attends to its own tokens (else it would attend to nothing);
    ``include_input_kv`` makes every face do so. ``ref_mask`` is dropped (None) when no slot is
    padded, unless ``keep_ref_mask``.
    """
    has_refs = ref_mask.any(dim=1)
    input_mask, input_all = None, False
    if include_input_kv or not bool(has_refs.all()):
        input_mask = torch.ones_like(has_refs) if include_input_kv else ~has_refs
        input_all = bool(input_mask.all())
        input_mask = input_mask.to(device)
    full = bool(ref_mask.all())
    mask = None if full and not keep_ref_mask else ref_mask.to(device)
    return ReferenceBatch(layers, mask, input_mask, input_all)
