#!/usr/bin/env bash
# Every GPU figure of issue 12 in one JSON: run on a machine with a CUDA GPU, from anywhere.
#
#   bash benchmarks/gpu.sh                 # JSON on stdout, progress on stderr
#   bash benchmarks/gpu.sh gpu.json        # ... also written to gpu.json
#
# - loss: the fused loss against the plain path and torchaudio (where it imports) at
#   B=32, T=500, U=100, V=1024, H=640 in bf16: time, peak memory, op count;
# - train_step: a training step of every preset, `large` included (bf16 autocast, V=1025,
#   240 s batches of 15 s utterances), with the fused loss and with torchaudio's: audio seconds
#   per second, peak memory, op counts and the loss's share of step time;
# - decode: decoding speed (on the GPU where benchmarks/decode.py has --device, else its CPU run).
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3). A failing
# benchmark stops the script with its name; nothing is merged from a partial run.
set -euo pipefail

out_file="${1:-}"
if [[ -n "$out_file" && "$out_file" != /* ]]; then out_file="$PWD/$out_file"; fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu.sh: no CUDA device: $PYTHON sees torch.cuda.is_available() == False." >&2
    echo "  Run it on a machine with an NVIDIA GPU and a CUDA build of torch" \
        "(check: $PYTHON -c 'import torch; print(torch.__version__, torch.version.cuda)')." >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run() {  # run NAME COMMAND...: COMMAND's stdout (one JSON object) goes to $work/NAME.json
    local name="$1"
    shift
    echo "gpu.sh: $name: $*" >&2
    if ! "$@" >"$work/$name.json"; then
        echo "gpu.sh: $name failed (command above); no JSON written." >&2
        exit 1
    fi
}

run loss "$PYTHON" benchmarks/loss.py --json --device cuda \
    --batch 32 --frames 500 --tokens 100 --vocab 1024 --hidden 640 --bf16
run train_step "$PYTHON" benchmarks/train_step.py --json --device cuda --vocab 1024
if "$PYTHON" benchmarks/decode.py --help | grep -q -- '--device'; then
    run decode "$PYTHON" benchmarks/decode.py --json --device cuda
else
    run decode "$PYTHON" benchmarks/decode.py --json
fi

"$PYTHON" - "$work" "$out_file" <<'EOF'
import json, pathlib, subprocess, sys

import torch

work, out_file = pathlib.Path(sys.argv[1]), sys.argv[2]
commit = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
).stdout.strip()
merged = {
    "gpu": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "commit": commit or None,
}
for name in ("loss", "train_step", "decode"):
    merged[name] = json.loads((work / f"{name}.json").read_text().strip().splitlines()[-1])
text = json.dumps(merged, indent=2)
print(text)
if out_file:
    pathlib.Path(out_file).write_text(text + "\n")
EOF
