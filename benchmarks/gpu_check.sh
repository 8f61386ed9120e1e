#!/usr/bin/env bash
# One short check on a machine with a GPU: every registered model's tiny preset for a few hundred
# steps and its paper preset for a few steps, then steps/s and peak GPU memory per run; with more
# than one GPU, the tiny preset once more under torchrun (one process per GPU).
#
#   benchmarks/gpu_check.sh [TINY_STEPS=300] [PAPER_STEPS=5]
#   WORK=/tmp/gpu-check PYTHON=.venv/bin/python GPUS=8 benchmarks/gpu_check.sh 300 5
#   DEVICE=cpu benchmarks/gpu_check.sh 2 0         # a dry run of the script itself on a CPU machine (tiny only)
#
# Needs only the repository and its Python environment: the data is the procedural sample release
# (200 motions), built here; the retrieval model uses the offline MiniLM text encoder. Each run's
# numbers come from the last line of its log.jsonl ({"kind": "run", "steps_per_s", "peak_memory_mb"}),
# measured over the training steps only (data loading included; validation and checkpoints not).
set -euo pipefail
cd "$(dirname "$0")/.."

TINY_STEPS=${1:-300}
PAPER_STEPS=${2:-5}
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
WORK=${WORK:-$(mktemp -d -t gpu-check-XXXXXX)}
DEVICE=${DEVICE:-cuda}
GPUS=${GPUS:-$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")}
export TOKENIZERS_PARALLELISM=false

if [ "$DEVICE" = cuda ]; then
    if [ "$GPUS" -lt 1 ]; then
        echo "gpu_check: no CUDA device visible (torch.cuda.device_count() == 0); DEVICE=cpu for a dry run" >&2
        exit 1
    fi
    "$PYTHON" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0), '|', $GPUS, 'GPU(s)')"
else
    GPUS=1
fi

DATA="$WORK/sample"
if [ ! -f "$DATA/build.json" ]; then
    "$PYTHON" -m datasets_build humanml3d --source sample --sample-motions 200 --out "$DATA" --quiet
fi
FINE="$WORK/finehumanml3d"   # FineMotionDiffuse reads checked fine steps: a finehumanml3d build answered by
if [ ! -f "$FINE/build.json" ]; then  # the tests' loopback chat server (no LLM needed for a throughput check)
    "$PYTHON" - "$DATA" "$FINE" <<'EOF_FINE'
import sys
sys.path.insert(0, "tests")
from chat_server import ChatServer, caption_of, fine_json_answer
from datasets_build import build
from datasets_build.recipes import RECIPES
from datasets_build.recipes.finehumanml3d import FineHumanML3DOptions
from datasets_build.recipes.options import LLMOptions
from datasets_build.synthetic.sample_release import write_sample_release
source = write_sample_release(sys.argv[2] + "-release", "humanml3d", 200, seed=0)
with ChatServer(answer=lambda body: fine_json_answer(caption_of(body["messages"]), steps=5)) as server:
    options = FineHumanML3DOptions(llm=LLMOptions(llm_base_url=server.base_url, llm_model="test-model"))
    build(RECIPES["finehumanml3d"].config(source, sys.argv[2], options, progress=False))
EOF_FINE
fi
RMD="$WORK/remodiffuse"       # ReMoDiffuse reads a remodiffuse build's CLIP features and neighbours
if [ ! -f "$RMD/build.json" ]; then
    "$PYTHON" -m datasets_build remodiffuse --source sample --sample-motions 200 --out "$RMD" \
        --text-encoder clip-random --quiet
fi
# the token models stand on a tokenizer (and LaMP-T2M/M2T on a LaMP run): small ones, trained here first
prepare_tokenizers() {
    [ -f "$WORK/vq/checkpoint.pt" ] || "$PYTHON" -m models train vqvae --data "$DATA" --out "$WORK/vq" --preset tiny \
        --max-steps 50 --device "$DEVICE" --quiet
    [ -f "$WORK/rvq/checkpoint.pt" ] || "$PYTHON" -m models train vqvae --data "$DATA" --out "$WORK/rvq" \
        --preset tiny --set quantizer=residual --set num_quantizers=3 --max-steps 50 --device "$DEVICE" --quiet
    [ -f "$WORK/lamp/checkpoint.pt" ] || "$PYTHON" -m models train lamp --data "$DATA" --tokenizer "$WORK/vq" \
        --out "$WORK/lamp" --preset tiny --max-steps 20 --device "$DEVICE" --quiet
    [ -d "$WORK/tiny-lm" ] || "$PYTHON" -c "import sys; from models.lamp.m2t_train import write_tiny_lm; \
write_tiny_lm(sys.argv[1], ['a person walks forward', 'a man jumps'] * 8)" "$WORK/tiny-lm"
}
data_for() {  # the build each model trains on
    case "$1" in
        finemotiondiffuse) echo "$FINE" ;;
        remodiffuse) echo "$RMD" ;;
        *) echo "$DATA" ;;
    esac
}
# mate needs a mate build with segmentation (an LLM and a segment encoder): not part of this check
MODELS=$("$PYTHON" -c "from models.registry import discover; print(' '.join(n for n, e in discover().items() if 'train' in e.commands and n != 'mate'))")
prepare_tokenizers

# epochs high enough that --max-steps is what stops each run
extra_args() {
    case "$1" in
        evaluator) echo "--epochs 100000 --decomp-epochs 100000" ;;  # --max-steps caps each of its two stages
        lamp) echo "--epochs 100000 --tokenizer $WORK/vq" ;;
        momask) echo "--epochs 100000 --tokenizer $WORK/rvq --stage mask" ;;
        lamp-t2m) echo "--epochs 100000 --lamp $WORK/lamp" ;;
        lamp-m2t) echo "--epochs 100000 --lamp $WORK/lamp --lm $WORK/tiny-lm" ;;
        *) echo "--epochs 100000" ;;
    esac
}

report() {  # report NAME PRESET PROCS RUN_DIR SECONDS
    "$PYTHON" - "$@" <<'EOF'
import json, sys
name, preset, procs, run, seconds = sys.argv[1:]
lines = [json.loads(l) for l in open(f"{run}/log.jsonl")]
r = next(l for l in reversed(lines) if l.get("kind") == "run")
print(f"{name:<12} {preset:<6} {procs:>5} {r['steps']:>6} {r['steps_per_s']:>10.2f} "
      f"{(r['peak_memory_mb'] or 0):>12.1f} {float(seconds):>9.1f}")
EOF
}

ROWS=()
run_one() {  # run_one NAME PRESET STEPS PROCS
    local name=$1 preset=$2 steps=$3 procs=$4
    local run="$WORK/runs/$name-$preset-x$procs" launcher=("$PYTHON" -m models)
    rm -rf "$run"
    if [ "$procs" -gt 1 ]; then
        launcher=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$procs" -m models)
    fi
    local start
    start=$(date +%s%N)
    # shellcheck disable=SC2046
    "${launcher[@]}" train "$name" --data "$(data_for "$name")" --out "$run" --preset "$preset" --max-steps "$steps" \
        --device "$DEVICE" --num-workers 4 --quiet $(extra_args "$name") > "$WORK/$name-$preset-x$procs.out" 2>&1 \
        || { echo "gpu_check: $name $preset (x$procs) failed; see $WORK/$name-$preset-x$procs.out" >&2; tail -20 "$WORK/$name-$preset-x$procs.out" >&2; return 1; }
    ROWS+=("$(report "$name" "$preset" "$procs" "$run" "$(( ($(date +%s%N) - start) / 1000000 ))e-3")")
}

status=0
for name in $MODELS; do
    run_one "$name" tiny "$TINY_STEPS" 1 || status=1
    if [ "$PAPER_STEPS" -gt 0 ]; then  # PAPER_STEPS=0: the tiny presets only
        run_one "$name" paper "$PAPER_STEPS" 1 || status=1
    fi
    if [ "$GPUS" -gt 1 ]; then
        run_one "$name" tiny "$TINY_STEPS" "$GPUS" || status=1
    fi
done

echo
printf "%-12s %-6s %5s %6s %10s %12s %9s\n" model preset procs steps "steps/s" "peak MiB" "wall s"
for row in "${ROWS[@]}"; do echo "$row"; done
echo "(work folder: $WORK)"
exit $status
