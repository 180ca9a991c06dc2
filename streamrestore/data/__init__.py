"""Training and evaluation data, in the order it flows: sources -> pack -> samples.

1. **Sources** (:mod:`streamrestore.data.sources`): one photo or one video clip and the identity
   it shows, with its licence class (only **train-ok** may train a shipped model).
2. **Packing** (:mod:`streamrestore.data.pack`): detect and align every face once and write all
   crops into one small ``.npz`` (:func:`~streamrestore.data.pack.pack_dataset`), loaded back by
   :class:`~streamrestore.data.pack.PackedFaces`.
3. **Samples** (:mod:`streamrestore.data.samples`): the torch ``Dataset`` of (degraded target,
   clean target, references) that training draws from, degraded by
   :mod:`streamrestore.data.degrade` (also used to make evaluation pairs).

Pack the train-ok shared set (prints the figures)::

    python -m streamrestore.data --shared ../shared --resolution 128 --out runs/trainok_128.npz

Nothing is imported here, so ``python -m streamrestore.data`` and evaluation do not load torch.
"""
