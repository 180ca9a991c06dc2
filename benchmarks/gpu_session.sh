#!/usr/bin/env bash
# The GPU checks and timings in one run, for a machine with one NVIDIA GPU.
#
# On the development machine (where ../shared and the package registries are), fill the
# git-ignored folder .device/ (about 52 MB: wheels the GPU image lacks, a 1080p clip, reference
# photos, the SCRFD pack):
#     bash benchmarks/gpu_session.sh --prepare
# then run on the GPU machine from the repository root, carrying .device/:
#     bash benchmarks/gpu_session.sh            # results go to $OUT (default ./out/gpu)
#
# What it does, in order (stops at the first failure so time is not spent on timings of a
# broken path): installs the carried wheels; runs the CUDA tests (Triton kernels against their
# references, compiled backends against eager, the device frame path); times the paper-scale
# restorer (random weights) eager fp32 / eager fp16 / compile fp16 at batch 1 and 4 with cached
# and recomputed references, with peak memory; runs `streamrestore bench` end to end on the
# 1080p clip with lite and with the paper-scale network. Untested until a session gets a GPU.
set -euo pipefail
CARRY=.device

if [[ "${1:-}" == "--prepare" ]]; then
    SHARED=${STREAMRESTORE_SHARED:-../shared}
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/shared/data/facenet_pytorch" "$CARRY/shared/models" "$CARRY/refs"
    pin() { grep -iE "^$1==" constraints.txt; }
    pip download -q --no-deps --python-version 3.12 --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$CARRY/wheels" "$(pin av)" "$(pin diffusers)" "$(pin norfair)" "$(pin safetensors)"
    pip download -q --no-deps -d "$CARRY/wheels" "$(pin filterpy)" "$(pin insightface)"
    cp "$SHARED/data/facenet_pytorch/video.mp4" "$CARRY/shared/data/facenet_pytorch/"
    cp -r "$SHARED/models/insightface" "$CARRY/shared/models/"
    cp "$SHARED"/data/face_recognition/knn_train/obama/* "$CARRY/refs/"
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export STREAMRESTORE_SHARED=$PWD/$CARRY/shared
pip install -q --no-deps "$CARRY"/wheels/* && pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee "$OUT/versions.txt"
# What the image lacks shows here (norfair needs scipy and rich, insightface onnx; not carried:
# the carry limit is 64 MiB and av alone is 36 MB); steps needing a missing module fail alone.
for m in scipy rich filterpy norfair insightface av diffusers; do
    python -c "import $m" 2>/dev/null && echo "ok $m" || echo "MISSING $m"
done | tee "$OUT/imports.txt"

# 1. correctness on the GPU (tests skip what needs ../shared media that was not carried)
python -m pytest -q -x tests/test_kernels.py tests/test_backends.py 2>&1 | tee "$OUT/tests.txt"
python -m pytest -q tests/test_device_frames.py 2>&1 | tee -a "$OUT/tests.txt" || true
set +e  # timings: each step on its own

# 2. the paper-scale restorer alone (goal: <= 20 ms/face at batch 1 fp16, >= 2.5x eager fp32)
python benchmarks/bench_restorer.py --scale paper --device cuda --dtype fp32 --batch 1 --iters 10 2>&1 | tee "$OUT/restorer_fp32.txt"
python benchmarks/bench_restorer.py --scale paper --device cuda --dtype fp16 --batch 1,4,8 --refs 4 --iters 20 --compile 2>&1 | tee "$OUT/restorer_fp16.txt"

# 3. end to end on 1080p, one face (goals: lite >= 120 fps, paper-scale >= 25 fps)
CLIP=$CARRY/shared/data/facenet_pytorch/video.mp4
for model in lite random-paper; do
    streamrestore bench "$CLIP" --refs "$CARRY/refs" --model "$model" --device cuda \
        --face-models "$CARRY/shared/models/insightface" --json "$OUT/bench_$model.json" 2>&1 | tee "$OUT/bench_$model.txt"
done
