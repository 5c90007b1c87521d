#!/usr/bin/env bash
# The SFT-net CPU training campaign (issue 12): fine-tunes sftnet on camera-true synthetic dual-pixel
# defocus, validating on the real DPDD pairs (dpdd_val, the selection set) every 250 steps; resumable
# (run it again to continue from RUN/last.pt). Usage: tools/campaign_sftnet.sh [RUN_DIR] [INIT_WEIGHTS]
# Runs in the background on all cores:  nohup tools/campaign_sftnet.sh > runs/sftnet-c1.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/sftnet-c2}
INIT=${2:-weights/sftnet.safetensors}
. .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE  # the dev VMs are shared: do not spin while waiting for the other thread
exec defocus train sftnet --data ../shared/data/sharp --synthetic --steps 12000 --patch 128 --batch 8 \
  --run-dir "$RUN" -o "$RUN/best.safetensors" --val ../shared/data/dpdd_val --val-every 250 \
  --init "$INIT" --lr 1e-4 --threads 2 --resume \
  --set coc_px=20 --set in_focus_prob=0.1 --set min_blur_fraction=0.3 --set noise_scale=0.5 --set highlight_prob=0.3 --set grid=2 --set fft_weight=0.1 \
  --set ema=0.999 --set tone_sigma=32 --set 'stages=[0,0,1]' --set warmup=100 --set progress_every=25 \
  --set save_every_s=300
