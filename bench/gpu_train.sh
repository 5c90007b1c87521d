#!/usr/bin/env bash
# bench/gpu_train.sh OUTDIR [MINUTES]: train sftnet, ifan and defocusgan at the same time on one CUDA GPU.
#
# For a short, rare GPU lend (issue 12): three background `defocus train` processes share the GPU for MINUTES
# (default 8) wall-clock minutes each, then stop themselves with a checkpoint. Each writes to OUTDIR/<model>/:
# last.pt / best.pt (CPU tensors: resumable on a CPU), log.jsonl (one record per step and per validation),
# train.log (its stderr: progress lines, validation scores) and <model>.safetensors (fp16 export of the best
# dpdd_val checkpoint, once one beats the input). Checkpoints are written at least every SAVE_EVERY_S seconds
# (default 60), so a lend that is cut off loses at most a minute. Running the script again on the same OUTDIR
# resumes every model (--resume) where it stopped. The shipped weights/ are read (--init), never written.
#
# Environment overrides (defaults in brackets):
#   DEVICE [cuda]  cpu | cuda | cuda:N (the tests' dry run uses cpu)
#   MODELS ["sftnet ifan defocusgan"]  a subset to train, e.g. MODELS=sftnet
#   DATA   [../shared/data/sharp]     sharp photos; dual-pixel defocus is synthesised on DEVICE
#   VAL    [../shared/data/dpdd_val]  validation pairs (input/, target/), the issue-12 selection set
#   STEPS  [sftnet 3000, ifan 2000, defocusgan 2000]  total steps of every model (sets the LR schedule and the
#          patch curriculum; MINUTES usually ends the run first; resume on a CPU with the same --steps)
#   PATCH [192]  SFT_BATCH [32] (sftnet's batch at 128 px; 14 patches at 192)  BATCH [12] (ifan, defocusgan)
#   VAL_EVERY [250]  SAVE_EVERY_S [60]  THREADS [4] (CPU threads per process)  SYN_VAL_N [12] (sftnet's
#   synthetic held-out patches; 0 = none)  BF16 [0] (1: bf16 autocast)
#   PYTHON [python, else python3]  an interpreter with defocus_cli and torch (CUDA build) installed
#   GRACE_S [240]  hard stop (SIGTERM, then SIGKILL 60 s later) at MINUTES·60 + GRACE_S seconds per process:
#          start-up and the last validation fit before it
#
# Exit status: 0 when every model exited 0, 1 when one did not, 2 for a usage error (nothing started);
# OUTDIR/status.txt lists each model's exit code (4: the device is not available).
set -u

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: bench/gpu_train.sh OUTDIR [MINUTES]   (env: DEVICE DATA VAL STEPS PATCH BATCH ...)" >&2
    exit 2
fi
case "${2:-8}" in
    ''|*[!0-9.]*) echo "error: MINUTES must be a number, got '${2}'" >&2; exit 2 ;;
esac

abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(abspath "$1")
MINUTES=${2:-8}
DEVICE=${DEVICE:-cuda}
# DATA / VAL given relative to the caller's folder; the defaults are relative to the repository root
DATA=$(abspath "${DATA:-$ROOT/../shared/data/sharp}")
VAL=$(abspath "${VAL:-$ROOT/../shared/data/dpdd_val}")
PATCH=${PATCH:-192}
SFT_BATCH=${SFT_BATCH:-32}
BATCH=${BATCH:-12}
VAL_EVERY=${VAL_EVERY:-250}
SAVE_EVERY_S=${SAVE_EVERY_S:-60}
THREADS=${THREADS:-4}
SYN_VAL_N=${SYN_VAL_N:-12}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
GRACE_S=${GRACE_S:-240}
MODELS=${MODELS:-sftnet ifan defocusgan}
BF16_FLAG=()
[ "${BF16:-0}" = "1" ] && BF16_FLAG=(--bf16)

for m in $MODELS; do
    case "$m" in sftnet|ifan|defocusgan) ;; *) echo "error: MODELS: unknown model '$m' (sftnet ifan defocusgan)" >&2; exit 2 ;; esac
done
for d in "$DATA" "$VAL"; do
    [ -d "$d" ] || { echo "error: $d is not a folder (set DATA / VAL)" >&2; exit 2; }
done
cd "$ROOT" || exit 2
if [ -z "$PYTHON" ] || ! "$PYTHON" -c "import defocus_cli" 2>/dev/null; then
    echo "error: '${PYTHON:-python}' cannot import defocus_cli; activate the venv or set PYTHON" >&2
    exit 2
fi
mkdir -p "$OUT" || exit 2

# one hard stop per process, SIGTERM first (the trainers checkpoint and exit on it), SIGKILL 60 s later
LIMIT_S=$(awk -v m="$MINUTES" -v g="$GRACE_S" 'BEGIN { printf "%d", m * 60 + g }')
STOPPER=()
command -v timeout >/dev/null 2>&1 && STOPPER=(timeout -s TERM -k 60 "$LIMIT_S")

common_args() {  # MODEL STEPS: the options every model shares
    local m=$1 steps=$2 resume=()
    [ -f "$OUT/$m/last.pt" ] && resume=(--resume)
    printf '%s\n' --data "$DATA" --synthetic --steps "$steps" --patch "$PATCH" --val "$VAL" \
        --val-every "$VAL_EVERY" --device "$DEVICE" --threads "$THREADS" --run-dir "$OUT/$m" \
        --out "$OUT/$m/$m.safetensors" "${resume[@]}" "${BF16_FLAG[@]}" \
        --set "minutes=$MINUTES" --set "save_every_s=$SAVE_EVERY_S"
}

declare -A PIDS=()
launch() {  # MODEL ARGS...: one background `defocus train MODEL ARGS...`, its stderr+stdout in OUTDIR/MODEL/train.log
    local m=$1
    shift
    mkdir -p "$OUT/$m"
    {
        echo "# $(date -u +%FT%TZ) $PYTHON -m defocus_cli train $m $*"
        exec "${STOPPER[@]}" "$PYTHON" -m defocus_cli train "$m" "$@"
    } >>"$OUT/$m/train.log" 2>&1 &
    PIDS[$m]=$!
    echo "started $m (pid ${PIDS[$m]}): $OUT/$m/train.log" >&2
}

stop_all() {
    echo "stopping: SIGTERM to every trainer (each writes a checkpoint)" >&2
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
}
trap stop_all TERM INT HUP

GPU_LOG_PID=
if [ "${DEVICE#cuda}" != "$DEVICE" ] && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 30 \
        >"$OUT/gpu_usage.csv" 2>&1 &
    GPU_LOG_PID=$!
fi

want() { case " $MODELS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if want sftnet; then
    mapfile -t A < <(common_args sftnet "${STEPS:-3000}")
    SFT_INIT=()
    [ -f weights/sftnet.safetensors ] && SFT_INIT=(--init weights/sftnet.safetensors)
    # the camera-true data and recipe of the CPU campaign (issue 12), with larger patches and batches
    launch sftnet "${A[@]}" "${SFT_INIT[@]}" --batch "$SFT_BATCH" --lr 1e-4 \
        --set coc_px=20 --set in_focus_prob=0.1 --set min_blur_fraction=0.3 --set noise_scale=0.5 \
        --set highlight_prob=0.3 --set grid=2 --set fft_weight=0.1 \
        --set ema=0.999 --set tone_sigma=32 --set 'stages=[0,0,1]' --set warmup=100 --set progress_every=25 \
        --set "syn_val_n=$SYN_VAL_N"
fi
if want ifan; then
    mapfile -t A < <(common_args ifan "${STEPS:-2000}")
    IFAN_INIT=()
    [ -f weights/ifan.safetensors ] && IFAN_INIT=(--init weights/ifan.safetensors)
    launch ifan "${A[@]}" "${IFAN_INIT[@]}" --batch "$BATCH" --lr 1e-4 \
        --set coc_px=20 --set in_focus_prob=0.1 --set highlight_prob=0.3
fi
if want defocusgan; then  # identity init: no shipped DefocusGAN weights
    mapfile -t A < <(common_args defocusgan "${STEPS:-2000}")
    launch defocusgan "${A[@]}" --batch "$BATCH" --set coc_px=20 --set in_focus_prob=0.1 --set highlight_prob=0.3
fi

FAILED=0
: >"$OUT/status.txt"
for m in sftnet ifan defocusgan; do
    [ -n "${PIDS[$m]:-}" ] || continue
    # `wait` returns early when a trapped signal arrives: wait again until the process is gone
    while :; do
        wait "${PIDS[$m]}"
        rc=$?
        kill -0 "${PIDS[$m]}" 2>/dev/null || break
    done
    echo "$m $rc" >>"$OUT/status.txt"
    echo "$m exited $rc (log: $OUT/$m/train.log)" >&2
    [ "$rc" -eq 0 ] || FAILED=1
done
[ -n "$GPU_LOG_PID" ] && kill "$GPU_LOG_PID" 2>/dev/null
exit "$FAILED"
