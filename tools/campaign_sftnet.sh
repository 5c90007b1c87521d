#!/usr/bin/env bash
# The SFT-net CPU training campaign (issue 12): fine-tunes sftnet on camera-true synthetic dual-pixel
# defocus, validating on the real DPDD pairs (dpdd_val, the selection set) every 250 steps; resumable
# (run it again to continue from RUN/last.pt). Usage: tools/campaign_sftnet.sh [RUN_DIR] [INIT_WEIGHTS] [--set K=V ...]
# Runs in the background on all cores:  nohup tools/campaign_sftnet.sh runs/sftnet-c4 > runs/sftnet-c4.log 2>&1 &
# Environment: THREADS (default 2), STEPS (default 12000), BF16=0 turns bf16 autocast off (on by default: a CPU
# without native bf16 should set BF16=0, it would be emulated and slower).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/sftnet-c4}
INIT=${2:-weights/sftnet.safetensors}
shift $(( $# < 2 ? $# : 2 ))
. .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE  # the dev VMs are shared: do not spin while waiting for the other thread
BF16_FLAG=$([ "${BF16:-1}" = 1 ] && echo --bf16 || true)
exec defocus train sftnet --data ../shared/data/sharp --synthetic --steps "${STEPS:-12000}" --patch 128 --batch 8 \
  --run-dir "$RUN" -o "$RUN/best.safetensors" --val ../shared/data/dpdd_val --val-every 250 \
  --init "$INIT" --lr 1e-4 --threads "${THREADS:-2}" --resume $BF16_FLAG \
  --set coc_px=20 --set in_focus_prob=0.1 --set min_blur_fraction=0.3 --set noise_scale=0.5 --set highlight_prob=0.3 \
  --set pool=64 --set pool_refresh=0.5 --set fft_weight=0.1 \
  --set ema=0.999 --set tone_sigma=32 --set 'stages=[0,0,1]' --set warmup=100 --set progress_every=25 \
  --set save_every_s=300 "$@"
