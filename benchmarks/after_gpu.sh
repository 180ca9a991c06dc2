#!/usr/bin/env bash
# After a lent GPU's training runs (benchmarks/gpu_train.sh): each returned UNet gets its own detail head,
# then the video benchmark and the demo set, against the shipped lite; one table at the end
# (benchmarks/compare_models.py). All on this machine's CPU, in one command:
#     bash benchmarks/after_gpu.sh RETURNED_DIR [NAME ...]
# RETURNED_DIR holds NAME_unet.safetensors (what gpu_train.sh wrote to $OUT); NAME is a config under
# configs/experiments/ (default: every NAME_unet.safetensors there; NAME_best, a run's weights of lowest
# held-out loss, is of config NAME). Results go to runs/after_gpu/:
#   NAME_base.safetensors (the UNet), NAME.safetensors (UNet + head: --model for any command),
#   vb_NAME/ (video benchmark), demo_NAME.json (demo set), compare.md (the table), NAME_head.log.
# Heads train side by side, one thread each (~30 min with their video samples); the benchmarks then run
# one model at a time (~6 min each). HEAD is the head's recipe (default: lite v7's, as
# configs/experiments/lite_v11_head.toml gives it), HEAD_EXTRA more of its settings ("--set steps=20");
# CLIPS the benchmark's clips (default all), MAX_FRAMES its frames per clip (48); SHARED the media (../shared).
# A stopped run goes on where it was: finished heads and benchmarks are kept (a benchmark stopped midway runs
# again whole). Each result's stamp (NAME.stamp, vb_MODEL.stamp) names what it was made from; results made
# from another UNet or other settings are refused, never reused: give a dry run its own RUNS=.
set -euo pipefail
[[ $# -ge 1 && -d "$1" ]] || { echo "usage: bash benchmarks/after_gpu.sh RETURNED_DIR [NAME ...]" >&2; exit 2; }
RETURNED=$1; shift
HEAD=${HEAD:-configs/experiments/lite_v11_head.toml}
SHARED=${SHARED:-../shared}
RUNS=${RUNS:-runs/after_gpu}
MAX_FRAMES=${MAX_FRAMES:-48}
mkdir -p "$RUNS"
names=("$@")
if (( ${#names[@]} == 0 )); then
    for f in "$RETURNED"/*_unet.safetensors; do
        [[ -f "$f" ]] && names+=("$(basename "$f" _unet.safetensors)")
    done
fi
(( ${#names[@]} > 0 )) || { echo "no NAME_unet.safetensors in $RETURNED" >&2; exit 2; }
config_of() { echo "configs/experiments/${1%_best}.toml"; }  # NAME_best: the best held-out weights of run NAME
for name in "${names[@]}"; do  # every input checked before any work starts
    [[ -f "$RETURNED/${name}_unet.safetensors" ]] || { echo "missing $RETURNED/${name}_unet.safetensors" >&2; exit 2; }
    [[ -f "$(config_of "$name")" ]] || { echo "missing $(config_of "$name") (the run's config)" >&2; exit 2; }
done

# what each result was made from: a result of another UNet, head recipe or benchmark setting is never
# taken for this one (a dry run's, or an earlier lent GPU's runs of the same config name)
stamp_ok() {  # stamp_ok FILE TEXT: true when FILE is absent (then written) or says TEXT
    if [[ -f "$1" ]]; then
        [[ "$(cat "$1")" == "$2" ]] && return 0
        echo "$RUNS holds results made otherwise than now ($1: $(cat "$1") | now: $2);" \
             "use another RUNS=… or remove them" >&2
        return 1
    fi
    printf '%s' "$2" > "$1"
}

# the heads' video faces do not depend on the base: made once, before the heads start side by side, so the
# heads of an A/B train on the very same samples (video_cache in the head's config)
head_set=(--set "video_cache=\"$RUNS/video_faces\"")
# shellcheck disable=SC2086  # HEAD_EXTRA is a list of options
python -m streamrestore.train.detail_head "$HEAD" --only-video-faces "${head_set[@]}" ${HEAD_EXTRA:-} \
    --set "unet_config=\"$(config_of "${names[0]}")\"" --set "output_dir=\"$RUNS/video_faces\"" \
    > "$RUNS/video_faces.log" 2>&1 || { echo "making the video faces failed: see $RUNS/video_faces.log" >&2; exit 1; }

pids=()
trap 'kill -TERM ${pids[@]+"${pids[@]}"} 2>/dev/null; wait; exit 130' INT TERM  # heads keep their steps (--resume)
for name in "${names[@]}"; do
    stamp_ok "$RUNS/$name.stamp" "unet $(sha256sum < "$RETURNED/${name}_unet.safetensors" | cut -c1-16) head $HEAD ${HEAD_EXTRA:-}"
    [[ -f "$RUNS/$name.safetensors" ]] && continue
    cp -f "$RETURNED/${name}_unet.safetensors" "$RUNS/${name}_base.safetensors"
    resume=()
    [[ -f "$RUNS/${name}_head/head.pt" ]] && resume=(--resume)
    # shellcheck disable=SC2086  # HEAD_EXTRA is a list of options
    python -m streamrestore.train.detail_head "$HEAD" --threads 1 ${resume[@]+"${resume[@]}"} "${head_set[@]}" ${HEAD_EXTRA:-} \
        --set "base_weights=\"$RUNS/${name}_base.safetensors\"" --set "unet_config=\"$(config_of "$name")\"" \
        --set "output_dir=\"$RUNS/${name}_head\"" --export "$RUNS/$name.safetensors" > "$RUNS/${name}_head.log" 2>&1 &
    pids+=($!)
done
failed=0
for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || failed=$?; done
trap - INT TERM
(( failed == 0 )) || { echo "a head failed (exit $failed): see $RUNS/*_head.log" >&2; exit "$failed"; }

compare=()
for model in lite "${names[@]}"; do
    file=$model; [[ $model == lite ]] || file=$RUNS/$model.safetensors
    weights=$file; [[ $model == lite ]] && weights=streamrestore/weights/lite.safetensors
    stamp_ok "$RUNS/vb_$model.stamp" "frames $MAX_FRAMES clips ${CLIPS:-all} model $(sha256sum < "$weights" | cut -c1-16)"
    if [[ ! -f "$RUNS/vb_$model/$(basename "$file" .safetensors)/table.json" ]]; then
        python benchmarks/video_benchmark.py --shared "$SHARED" --max-frames "$MAX_FRAMES" --model "$file" \
            --out "$RUNS/vb_$model" --degraded-dir runs/vbdeg ${CLIPS:+--clips "$CLIPS"}
    fi
    if [[ ! -f "$RUNS/demo_$model.json" ]]; then
        streamrestore eval --data "$SHARED/data/instantrestore" --models "$SHARED/models" --model "$file" --no-dlib \
            --out "$RUNS/demo_$model" --json "$RUNS/demo_$model.json"
    fi
    compare+=("$model=$RUNS/vb_$model/$(basename "$file" .safetensors),$RUNS/demo_$model.json")
done
python benchmarks/compare_models.py "${compare[@]}" | tee "$RUNS/compare.md"
