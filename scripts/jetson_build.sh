#!/usr/bin/env bash
# On a Jetson: turn an exported run folder into a TensorRT engine, check it against ONNX, profile it, and run
# the privacy gate against the engine's outputs. Everything is written into RUN_DIR/engine/.
#
# Usage: scripts/jetson_build.sh RUN_DIR [--precision fp16|int8|best|fp32] [--dla-core N] [--batch MIN,OPT,MAX]
#                                        [--onnx PATH] [--runs N]
#
# The ONNX used is --onnx, else RUN_DIR/quantize/edge.<precision>.onnx (ModelOpt Q/DQ INT8 or AutoCast FP16) when
# it exists, else the float RUN_DIR/export/edge.onnx; a float model built as INT8 calibrates from
# RUN_DIR/quantize/calib.npz (TensorRT 8.x, or DLA on 10.x). Lock the clocks first (`sudo jetson_clocks`) for
# reproducible latency; `profile` warns when they are not locked.
set -euo pipefail

usage() { sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
RUN=$1
shift
PRECISION=fp16
DLA=()
BATCH=()
ONNX=""
RUNS=200
while [[ $# -gt 0 ]]; do
    case $1 in
        --precision) PRECISION=$2; shift 2 ;;
        --dla-core) DLA=(--dla-core "$2"); shift 2 ;;
        --batch) BATCH=(--batch "$2"); shift 2 ;;
        --onnx) ONNX=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        *) usage ;;
    esac
done

command -v patrol-deploy >/dev/null || { echo "jetson_build: patrol-deploy is not on PATH (pip install .)" >&2; exit 3; }
[[ -d $RUN ]] || { echo "jetson_build: run folder '$RUN' does not exist" >&2; exit 2; }

if [[ -z $ONNX ]]; then
    if [[ -f $RUN/quantize/edge.$PRECISION.onnx ]]; then
        ONNX=$RUN/quantize/edge.$PRECISION.onnx
    else
        ONNX=$RUN/export/edge.onnx
    fi
fi
[[ -f $ONNX ]] || { echo "jetson_build: no ONNX at '$ONNX'; run \`patrol-deploy export\` first" >&2; exit 2; }

CALIB_NPZ=$RUN/quantize/calib.npz
CALIB=()
if [[ ($PRECISION == int8 || $PRECISION == best) && $ONNX == "$RUN/export/edge.onnx" && -f $CALIB_NPZ ]]; then
    CALIB=(--calib "$CALIB_NPZ")
fi
INPUTS=()
[[ -f $CALIB_NPZ ]] && INPUTS=(--inputs "$CALIB_NPZ")  # real, normalized images rather than random data

OUT=$RUN/engine
mkdir -p "$OUT"
ENGINE=$OUT/edge.$PRECISION${DLA[1]:+.dla${DLA[1]}}.engine

step() { echo "== jetson_build: $*" >&2; }

step "build $ENGINE from $ONNX ($PRECISION)"
patrol-deploy build-engine "$ONNX" --out "$ENGINE" --precision "$PRECISION" "${DLA[@]}" "${BATCH[@]}" "${CALIB[@]}" \
    --timing-cache "$OUT/timing.cache"

step "the equivalent trtexec command (for rebuilding in a shell)"
patrol-deploy trtexec-cmd "$ONNX" --out "$ENGINE" --precision "$PRECISION" "${DLA[@]}" "${BATCH[@]}" \
    "${CALIB[@]}" --timing-cache "$OUT/timing.cache" > "$OUT/trtexec_command.txt.tmp"
mv "$OUT/trtexec_command.txt.tmp" "$OUT/trtexec_command.txt"

step "compare the engine with ONNX Runtime"
patrol-deploy compare "$ONNX" "$ENGINE" "${INPUTS[@]}" --report "$OUT/compare.json"

step "profile on-device latency"
patrol-deploy profile "$ENGINE" --backend trt --runs "$RUNS" --warmup 20 --report "$OUT/profile.json"

step "privacy gate against the engine's outputs"
patrol-deploy verify "$RUN" --engine "$ENGINE"

step "done: $ENGINE, $ENGINE.json, $OUT/compare.json, $OUT/profile.json"
