#!/usr/bin/env bash
# Prepare, here (where pip reaches PyPI), what benchmarks/gpu.sh needs on the lent GPU machine, which has
# no network, Python 3.12, torch 2.11 / torchvision 0.26, and neither SimpleITK nor pydicom:
#
#     benchmarks/gpu_prepare.sh          # -> .gpu/wheels/*.whl and .gpu/example_ct.nii.gz (about 57 MB)
#
# .gpu/ is ignored by git (.git/info/exclude) and travels with the device tool's carry. The run is then
# one command on the device machine: `bash benchmarks/gpu.sh $OUT/gpu` with carry [".gpu"]; gpu.sh
# installs the wheels from .gpu/wheels (--no-index) and bench_gpu.py finds the CT in .gpu/.
# Versions: constraints.txt's. Environment: PYTHON (default python3), GPU_PYTHON_VERSION (default 3.12).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DIR="$REPO/.gpu"
mkdir -p "$DIR/wheels"
EXCLUDE="$(git -C "$REPO" rev-parse --git-path info/exclude)"
case "$EXCLUDE" in /*) ;; *) EXCLUDE="$REPO/$EXCLUDE" ;; esac
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx "/.gpu/" "$EXCLUDE" 2>/dev/null || echo "/.gpu/" >>"$EXCLUDE"

pins=()
for pkg in simpleitk pydicom; do
    pin=$(grep -i "^$pkg==" "$REPO/constraints.txt") || { echo "gpu_prepare.sh: $pkg not in constraints.txt" >&2; exit 1; }
    pins+=("$pin")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DIR/wheels" "${pins[@]}"
install -m 0644 "$REPO/../shared/data/example_ct.nii.gz" "$DIR/example_ct.nii.gz"
du -sh "$DIR"
