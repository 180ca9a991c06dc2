#!/usr/bin/env bash
# GPU training runs of lite's UNet in one command, for a machine lent for minutes (one NVIDIA GPU,
# no network, a Python image with torch, accelerate, safetensors and OpenCV but without PyAV and
# diffusers): configs/experiments/lite_v9_gpu.toml, or the experiments named by CONFIG (configs whose
# data and identity_weights point into .device-train/; several, space-separated, train side by side).
#
# On the development machine (where ../shared, the training pack and the package registries are),
# fill the git-ignored folder .device-train/ (about 46 MB: PyAV as a .tar.xz, a third smaller than its
# wheel, so repository + carry stay under a 64 MiB transfer; the wheels the image lacks; the training
# pack; the identity loss's MobileFaceNet):
#     bash benchmarks/gpu_train.sh --prepare
# then, from the repository root on the GPU machine, carrying .device-train/:
#     MINUTES=8 bash benchmarks/gpu_train.sh       # results go to $OUT (default ./out/gpu_train)
#
# Each run trains for MINUTES of wall time with the learning rate decaying over that time
# (--schedule-by-time: the machine's speed is not known beforehand) and writes to $OUT, under its
# config's name: the UNet's weights (NAME_unet.safetensors, fp16, loadable with --model PATH), with
# heldout_every set also the weights of the lowest held-out loss (NAME_best_unet.safetensors), and
# NAME_logs.tar.gz (NAME_train.log, NAME_losses.csv with samples/s per logged window, NAME_heldout.csv). Then, on the CPU, the detail head
# on each new base and the benchmarks: `bash benchmarks/after_gpu.sh RETURNED_DIR`. EXTRA adds `streamrestore train` options
# to every run (e.g. "--set batch_size=64").
#
# Why several runs side by side: one run's update is bound by its Python process, not by the GPU
# (session 25 on an H200: 150 ms of CPU against 17-46 ms of kernels per step, docs/video_eval.md),
# so two runs get about twice the samples of one in the same minutes. The cores' loader workers are
# shared out between them (WORKERS each; default: the cores left after one per run, divided). Two runs
# at most: 8 files come back from a lent machine (3 per run, gpu.csv and versions.txt).
# `bash benchmarks/gpu_train.sh --throughput` measures instead of training: the loader and the update
# apart (benchmarks/train_throughput.py) at the batch sizes in BATCHES, with a profile of the update
# (the first config). `--timings`: the restorer's speed, paper-scale and lite (benchmarks/bench_restorer.py),
# for the minutes a lease has left after a run.
set -euo pipefail
CARRY=${CARRY:-.device-train}
CONFIG=${CONFIG:-configs/experiments/lite_v9_gpu.toml}

if [[ "${1:-}" == "--prepare" ]]; then
    SHARED=${STREAMRESTORE_SHARED:-../shared}
    PACK=${PACK:-runs/trainok3_128.npz}
    if [[ ! -f "$PACK" ]]; then
        python -m streamrestore.data --shared "$SHARED" --resolution 128 --frames-per-video 36 --out "$PACK"
    fi
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels"
    tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
    pin() { grep -iE "^$1==" constraints.txt; }
    pip download -q --no-deps --python-version 3.12 --implementation cp --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$tmp" "$(pin av)"
    mkdir "$tmp/site" && unzip -q "$tmp"/av-*.whl -d "$tmp/site"
    tar cf - -C "$tmp/site" . | xz -9 -T2 > "$CARRY/av.tar.xz"
    pip download -q --no-deps -d "$CARRY/wheels" "$(pin diffusers)" "$(pin importlib_metadata)" "$(pin pytorch-msssim)"
    cp "$PACK" "$CARRY/trainok3_128.npz"
    cp "$SHARED/models/recog/mobilefacenet_foamliu.pt" "$CARRY/"
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-out/gpu_train}
MINUTES=${MINUTES:-8}
SITE=${SITE:-/tmp/streamrestore-site}
mkdir -p "$OUT" "$SITE"
for f in "$CARRY/av.tar.xz" "$CARRY/trainok3_128.npz" "$CARRY/mobilefacenet_foamliu.pt"; do
    [[ -f "$f" ]] || { echo "missing $f: run 'bash benchmarks/gpu_train.sh --prepare' first and carry $CARRY" >&2; exit 2; }
done
tar xJf "$CARRY/av.tar.xz" -C "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$CARRY"/wheels/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi") > "$OUT/gpu.csv"
python3 -c "import torch, av, diffusers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__, 'diffusers', diffusers.__version__)" | tee "$OUT/versions.txt"
if [[ "${1:-}" == "--throughput" ]]; then
    # where a step's time goes instead of a run (benchmarks/train_throughput.py), at each batch size of BATCHES
    for b in ${BATCHES:-32 128}; do
        # shellcheck disable=SC2086  # EXTRA is a list of options
        python3 benchmarks/train_throughput.py "${CONFIG%% *}" --seconds "${MODE_SECONDS:-10}" --set "batch_size=$b" \
            --modes "${MODES:-loader,update}" --json "$OUT/throughput_b$b.json" --profile "$OUT/profile_b$b.txt" \
            ${EXTRA:-} 2>&1 | tee -a "$OUT/throughput.log"
    done
    exit 0
fi
if [[ "${1:-}" == "--timings" ]]; then
    # the restorer's own speed on this GPU instead of a run (benchmarks/bench_restorer.py): the paper-scale
    # network (random weights: speed does not depend on them) in fp16 and fp32, then lite. Each step is
    # capped at STEP_SECONDS, so a lease with a few minutes left still brings back what finished.
    cap=${STEP_SECONDS:-70}
    timeout "$cap" python3 benchmarks/bench_restorer.py --scale paper --device cuda --dtype fp16 --batch 1,4 \
        --iters 20 2>&1 | tee "$OUT/restorer_paper_fp16.txt" || true
    timeout "$cap" python3 benchmarks/bench_restorer.py --scale paper --device cuda --dtype fp32 --batch 1 \
        --iters 10 --skip-recompute 2>&1 | tee "$OUT/restorer_paper_fp32.txt" || true
    timeout "$cap" python3 benchmarks/bench_restorer.py --model lite --device cuda --batch 1,8,32 \
        --iters 20 --skip-recompute 2>&1 | tee "$OUT/restorer_lite.txt" || true
    exit 0
fi
read -r -a configs <<< "$CONFIG"
runs=${#configs[@]}
(( runs > 0 )) || { echo "CONFIG names no config" >&2; exit 2; }
workers=()  # a single run keeps its config's num_workers unless WORKERS is given
if [[ -n "${WORKERS:-}" || $runs -gt 1 ]]; then
    workers=(--set "num_workers=${WORKERS:-$(( ($(nproc) - runs) / runs ))}")
fi
names=() run_dirs=()
for config in "${configs[@]}"; do  # every config read before any run starts
    names+=("$(basename "$config" .toml)")
    run_dirs+=("$(python3 -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['output_dir'])" "$config")")
done
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM  # a stop reaches the runs (they checkpoint)
for i in "${!configs[@]}"; do
    name=${names[$i]}
    (
        status=0
        # shellcheck disable=SC2086  # EXTRA is a list of options
        python3 -m streamrestore.cli train "${configs[$i]}" --max-minutes "$MINUTES" --schedule-by-time --no-progress \
            "${workers[@]}" --export "$OUT/${name}_unet.safetensors" ${EXTRA:-} \
            > "$OUT/${name}_train.log" 2>&1 || status=$?
        # a lease returns 8 files: per run the last weights, the best held-out weights (heldout_every)
        # and one archive of its logs (the train log, losses.csv, heldout.csv)
        [[ -f "${run_dirs[$i]}/best.safetensors" ]] && cp "${run_dirs[$i]}/best.safetensors" "$OUT/${name}_best_unet.safetensors"
        logs=("$OUT/${name}_train.log")
        for f in losses.csv heldout.csv heldout_best.json; do
            [[ -f "${run_dirs[$i]}/$f" ]] && cp "${run_dirs[$i]}/$f" "$OUT/${name}_$f" && logs+=("$OUT/${name}_$f")
        done
        tar czf "$OUT/${name}_logs.tar.gz" -C "$OUT" "${logs[@]##*/}" && rm -f "${logs[@]}"
        exit $status
    ) &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    status=0
    wait "$pid" || status=$?
    (( failed == 0 )) && failed=$status  # the first failure's own exit code
done
for name in "${names[@]}"; do
    echo "== $name"; tar xzf "$OUT/${name}_logs.tar.gz" -O "${name}_train.log" | tail -n 5 || true
done
exit $failed
