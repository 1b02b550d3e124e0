#!/usr/bin/env bash
# The GPU kit in one command (see benchmarks/README.md#the-gpu-kit).
#
# On the GPU machine (after benchmarks/gpu/prepare.sh ran here and benchmarks/gpu/wheels/ travelled with the tree):
#   bash benchmarks/gpu/run.sh                   # writes $OUT/gpu.json (or --out PATH)
# Here, without a GPU, the same code on tiny sizes, with this environment's packages:
#   bash benchmarks/gpu/run.sh --cpu --out /tmp/gpu.json
# One part only: --sections prm_scoring[,grpo_smoke,...] --shapes qwen2.5-7b (see kit.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cpu=false
out=""
kit_options=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu=true ;;
        --out) out="$2"; shift ;;
        --sections|--shapes) kit_options+=("$1" "$2"); shift ;;
        *) echo "run.sh: unknown argument $1 (allowed: --cpu, --out PATH, --sections A,B, --shapes A,B)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$out" ]; then
    if [ -z "${OUT:-}" ]; then echo "run.sh: name the JSON file with --out PATH (or set OUT)" >&2; exit 2; fi
    out="$OUT/gpu.json"
fi
python=${PYTHON:-python3}
if [ "$cpu" = false ]; then
    if ! ls "$here"/wheels/*.whl >/dev/null 2>&1; then
        echo "run.sh: no wheels in $here/wheels: run benchmarks/gpu/prepare.sh first and carry that folder" >&2
        exit 2
    fi
    site=$(mktemp -d /tmp/gpu-kit-site.XXXXXX)
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$here"/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    set -- --out "$out" "${kit_options[@]}"
else
    set -- --out "$out" --cpu "${kit_options[@]}"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$python" "$here/kit.py" "$@"
