#!/usr/bin/env bash
# The GPU benchmark in one command, for the first machine with a CUDA GPU:
#
#     benchmarks/gpu.sh OUT_DIR            # writes OUT_DIR/gpu.md, OUT_DIR/gpu.json, OUT_DIR/gpu.log
#     benchmarks/gpu.sh OUT_DIR --dry      # tiny sizes on the CPU (what tests/test_bench_gpu_dry.py runs)
#
# Installs nothing from the network. If `import a3d` fails, a3d is installed beside the machine's
# torch with `pip install --no-deps --no-build-isolation --no-index -e .`; failing that, the
# checkout's src/ goes on PYTHONPATH. Missing pure-Python dependencies are installed only from a
# local wheel folder named by A3D_WHEELHOUSE (pip --no-index); stages that need a module still
# missing are skipped and say so. benchmarks/gpu_prepare.sh (run beforehand where pip has a network)
# puts those wheels and the CT into .gpu/, the default wheel folder. The benchmark stops at 470 s (each stage has its own cap inside:
# benchmarks/bench_gpu.py), so the whole command ends within 8 minutes.
# Environment: PYTHON (default python3), A3D_WHEELHOUSE, A3D_BENCH_DRY=1 (same as --dry).
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: benchmarks/gpu.sh OUT_DIR [--dry]" >&2
    exit 2
fi
OUT=$1
shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: > "$LOG"

export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PY" -c "import a3d" 2>/dev/null; then
    echo "gpu.sh: a3d not importable; installing the checkout without dependencies" | tee -a "$LOG" >&2
    if ! "$PY" -m pip install --no-deps --no-build-isolation --no-index -e "$REPO" >>"$LOG" 2>&1; then
        echo "gpu.sh: pip install failed (see $LOG); using $REPO/src on PYTHONPATH" | tee -a "$LOG" >&2
        export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
A3D_WHEELHOUSE=${A3D_WHEELHOUSE:-$REPO/.gpu/wheels}  # benchmarks/gpu_prepare.sh puts them there
if [ -n "${A3D_WHEELHOUSE:-}" ] && [ -d "$A3D_WHEELHOUSE" ]; then
    for mod_pkg in numpy:numpy cv2:opencv-python-headless SimpleITK:SimpleITK pydicom:pydicom tqdm:tqdm; do
        mod=${mod_pkg%%:*}
        pkg=${mod_pkg#*:}
        if ! "$PY" -c "import $mod" 2>/dev/null; then
            "$PY" -m pip install --no-deps --no-index --find-links "$A3D_WHEELHOUSE" "$pkg" >>"$LOG" 2>&1 \
                || echo "gpu.sh: $pkg not in $A3D_WHEELHOUSE" | tee -a "$LOG" >&2
        fi
    done
fi

cd "$REPO"
timeout --signal=TERM --kill-after=10 470 "$PY" benchmarks/bench_gpu.py "$OUT" "$@" 2> >(tee -a "$LOG" >&2)
