"""Hash every output frame of the pipeline, to show that a refactoring changed no output bit.

Run it with two checkouts on the same clip and model file and compare the JSON files::

    PYTHONPATH=<checkout A> python tools/output_hashes.py CLIP --refs DIR --model FILE \\
        --face-models DIR --frames 24 --out a.json
    PYTHONPATH=<checkout B> python tools/output_hashes.py ... --out b.json
    python tools/output_hashes.py --compare a.json b.json

Settings that changed on purpose between the two checkouts are pinned with ``--color-match`` and
``--no-input-average`` (the paste's colour matching and the temporal input average; older
checkouts lack the latter and are run without it). The restorer runs eagerly on one CPU thread,
so the output is deterministic. Also reports how many frames differ from the input, so a run
that changed nothing cannot pass as a match.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys


def _hash(frame) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()[:16]


def hashes(clip: str, refs: list[str], model: str, face_models: str | None, frames: int, color_match: bool,
           input_average: bool) -> dict:
    import av
    import torch

    from streamrestore.blend import PasteConfig
    from streamrestore.pipeline import PipelineConfig
    from streamrestore.temporal import TemporalConfig

    try:
        from streamrestore.pipeline import build_face_restorer
    except ImportError:  # checkouts where the builder lived in api
        from streamrestore.api import build_face_restorer

    torch.set_num_threads(1)
    has_average = "denoise" in {f.name for f in dataclasses.fields(TemporalConfig)}
    temporal = TemporalConfig() if input_average or not has_average else TemporalConfig(denoise=0.0)
    config = PipelineConfig(paste=PasteConfig(color_match=color_match), temporal=temporal)
    restorer = build_face_restorer(refs, model=model, face_models=face_models, config=config, backend="eager")
    with av.open(clip) as container:
        stream = container.streams.video[0]
        restorer = restorer.fresh(float(stream.average_rate or 25.0))
        inputs = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), container.decode(stream))]
    input_hashes = [_hash(f) for f in inputs]
    outputs = [_hash(f) for f in restorer.stream(iter([f.copy() for f in inputs]))]
    return {"frames": len(outputs), "hashes": outputs,
            "changed_from_input": sum(a != b for a, b in zip(input_hashes, outputs))}


def compare(a: dict, b: dict) -> int:
    same = sum(x == y for x, y in zip(a["hashes"], b["hashes"]))
    print(f"{same} of {a['frames']} frames equal bit for bit ({b['frames']} in the second run); "
          f"frames the restorer changed: {a['changed_from_input']} / {b['changed_from_input']}")
    return 0 if same == a["frames"] == b["frames"] and a["changed_from_input"] > 0 else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip", nargs="?")
    p.add_argument("--refs", action="append", default=[])
    p.add_argument("--model", default="lite")
    p.add_argument("--face-models")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--color-match", action="store_true", help="the paste's colour matching on")
    p.add_argument("--no-input-average", action="store_true", help="the temporal input average off")
    p.add_argument("--out")
    p.add_argument("--compare", nargs=2, metavar="JSON")
    args = p.parse_args(argv)
    if args.compare:
        a, b = (json.loads(open(path).read()) for path in args.compare)
        return compare(a, b)
    if not args.clip or not args.out:
        p.error("give CLIP and --out (or --compare A B)")
    result = hashes(args.clip, args.refs, args.model, args.face_models, args.frames, args.color_match,
                    not args.no_input_average)
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"{result['frames']} frames hashed, {result['changed_from_input']} changed by the restorer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
