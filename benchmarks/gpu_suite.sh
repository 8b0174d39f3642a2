#!/usr/bin/env bash
# Every GPU measurement of the suite in one command (about 5 minutes on one H200):
#   bash benchmarks/gpu_suite.sh IMAGENET_SUBSET_DIR [OUT_DIR]
# 1. the adapters stage's accelerator suite (ResNet-50 and EfficientNet-Lite0, batches 32 and 256,
#    CAM / Grad-CAM / Grad-CAM++ with NumPy maps and device maps, torch-cam and pytorch-grad-cam
#    beside them, Score-CAM on one image) -> OUT_DIR/report.md, results.json;
# 2. the evaluation engine on the ImageNet subset (EfficientNet-Lite0, cam + gradcam, wsol) with
#    1 sweep worker and with every core -> OUT_DIR/evaluate-w1, OUT_DIR/evaluate-all, and the
#    printed images/s in OUT_DIR/evaluate.log;
# 3. the CUDA tests that CI cannot run (device maps against CPU maps) and the peer-parity tests
#    (pytorch-grad-cam is importable where torchvision is) -> OUT_DIR/tests.log.
# PYTHON picks the interpreter (default python3). Needs cam_core installed with the torch and demo extras; the peers are optional.
set -uo pipefail
data=${1:?usage: bash benchmarks/gpu_suite.sh IMAGENET_SUBSET_DIR [OUT_DIR]}
out=${2:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
timeout 270 "$py" benchmarks/run.py --stages adapters --device cuda --no-progress --out "$out" || status=1
for w in 1 all; do
    workers=$([ "$w" = all ] && nproc || echo 1)
    timeout 90 "$py" -m cam_core evaluate --data "$data" --protocol wsol --methods cam,gradcam \
        --batch-size 64 --gallery 0 --device cuda --workers "$workers" --no-progress --restart \
        --out "$out/evaluate-$w" 2>&1 | tee -a "$out/evaluate.log" || status=1
done
timeout 100 "$py" -m pytest -q -p no:cacheprovider -k "cuda or CUDA or peer or parity" \
    tests/adapters/test_torch_device.py tests/core/test_namespaces.py tests/adapters/test_torch.py \
    tests/test_peer_parity.py 2>&1 | tee "$out/tests.log" | tail -5 || status=1
exit $status
