#!/usr/bin/env bash
# One picture per threat model on mnist5k for docs/unforeseen.md: rows are the strengths of its ladder, columns
# six test images. The optimised corruptions are drawn at random latents (no model needed); the other threat
# models as worst cases on an undefended LeNet trained first (5 epochs, seed 0). Run from the repository root:
#
#   bash benchmarks/draw_threat_models.sh [OUT_DIR]      # default docs/images/threat-models
#
# hsv needs colour images and is not drawn on mnist5k.
set -euo pipefail
out="${1:-docs/images/threat-models}"
model="runs/docs-standard-lenet"
mkdir -p "$out"
if [ ! -f "$model/model.safetensors" ]; then
    midbench train --method standard --arch lenet --dataset mnist5k --epochs 5 --out "$model"
fi
# the optimised corruptions (attacks_registry/unforeseen_ua.toml), at random latents
for id in gabor snow fog wood kaleidoscope pixel blur glitch affine perspective brightness-contrast; do
    midbench attacks show "$id" --image "$out/$id.png" > /dev/null
done
# the other threat models, by the unknown-attack profile's attack of each, worst case on the model
for id in apgd-linf apgd-l2 apgd-l1 stadv-fast rot-trans-coarse elastic-apgd jpeg-apgd noise-uniform-linf; do
    midbench attacks show "$id" --image "$out/$id.png" --model "$model/model.safetensors" > /dev/null
done
echo "pictures in $out"
