#!/usr/bin/env bash
# Issue 18's GPU benchmark as one device command: install the carried diffusers wheel (the device machine has
# torch, transformers, accelerate and safetensors but no diffusers), then run bench/gpu_speed.py; its JSON and
# Markdown go to $OUT after every model and mode, so a run cut short keeps what it measured.
#
# On the host, once (.whl/ is kept out of git through .git/info/exclude):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1
# On the device (carry [".whl"]; ~6-7 min for eager, ~3-4 min for compiled; one phase per call fits 10 min):
#   bash bench/gpu_device_run.sh eager      # all five models, eager: the README table's rows
#   bash bench/gpu_device_run.sh compiled   # PixArt-512 eager + regional compile + reduce-overhead (CUDA graphs)
# On the CPU, before spending device time (tiny configs, the eager backend, one round):
#   SMOKE=1 OUT=out/gpu-smoke bash bench/gpu_device_run.sh all
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
phase=${1:-eager}
case $phase in eager|compiled|all) ;; *) echo "usage: bench/gpu_device_run.sh [eager|compiled|all]" >&2; exit 2;; esac
if ! python3 -c "import diffusers" 2>/dev/null; then
    compgen -G ".whl/diffusers-*.whl" > /dev/null || { echo "no diffusers and no .whl/diffusers-*.whl: see the header" >&2; exit 2; }
    site=$(mktemp -d)  # a scratch folder for the wheel, outside the working tree
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/diffusers-*.whl
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if [ -n "${SMOKE:-}" ]; then device=(--smoke); models=pixart-512,flux-dev-1024; else device=(--device cuda); models=; fi
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
if [ "$phase" != compiled ]; then
    python3 bench/gpu_speed.py "${device[@]}" ${models:+--models $models} --modes eager --warmup-rounds 1 \
        --out "$OUT/gpu_speed_eager.json"
fi
if [ "$phase" != eager ]; then
    python3 bench/gpu_speed.py "${device[@]}" --models pixart-512 --modes eager,regional,reduce-overhead \
        --out "$OUT/gpu_speed_compiled.json"
fi
