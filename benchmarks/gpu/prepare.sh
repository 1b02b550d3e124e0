#!/usr/bin/env bash
# Run here, before the GPU kit travels: download the wheels the GPU machine lacks into benchmarks/gpu/wheels/
# (git-ignored), for its Python (CPython 3.12, x86-64 manylinux), at the versions installed in this environment, so
# the GPU runs the code that the tests here ran. deepspeed is published as an sdist only: it is built here into a
# pure-Python wheel (no ops compiled; the kit does not use DeepSpeed's kernels).
#
#   bash benchmarks/gpu/prepare.sh              # uses `python` on PATH (the project's venv)
#   PYTHON=.venv/bin/python bash benchmarks/gpu/prepare.sh
#
# It stops if the wheels and the working tree together exceed what travels to the GPU machine (64 MiB).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-python}
out="$here/wheels"
staging="$here/wheels.partial"
limit_mib=64

# The packages the GPU image lacks, or has at a version older than ours (transformers 5.17 < 5.23, peft), with the
# ones they need that the image lacks too. Names as pip knows them; versions come from this environment.
packages=(
    trl transformers peft datasets dill multiprocess fsspec
    math-verify latex2sympy2_extended antlr4-python3-runtime
    deepspeed hjson pydantic pydantic_core annotated-types typing-inspection
    wandb cwevals platformdirs opentelemetry-api opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
    opentelemetry-exporter-otlp-proto-common opentelemetry-proto opentelemetry-semantic-conventions
    opentelemetry-exporter-http-transport opentelemetry-exporter-otlp-common googleapis-common-protos
)
pins=$("$python" - "${packages[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"prepare.sh: not installed here: {missing}; run it from the project's environment "
             "(pip install -e '.[test]')")
PY
)
rm -rf "$staging"
mkdir -p "$staging"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
binary_pins=$(grep -v '^deepspeed==' <<<"$pins")
deepspeed_pin=$(grep '^deepspeed==' <<<"$pins")
echo "prepare.sh: downloading $(wc -l <<<"$binary_pins") wheels for CPython 3.12 x86-64" >&2
# shellcheck disable=SC2086
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none "${platforms[@]}" --platform any -d "$staging" $binary_pins
echo "prepare.sh: building $deepspeed_pin as a pure-Python wheel" >&2
DS_BUILD_OPS=0 "$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$staging" "$deepspeed_pin"
find "$staging" -name 'deepspeed-*.whl' ! -name '*-none-any.whl' | grep -q . && {
    echo "prepare.sh: the deepspeed wheel is not pure Python; it would not install on the GPU machine" >&2; exit 1; }

wheels_kib=$(du -sk "$staging" | cut -f1)
tree_kib=$(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
total_mib=$(( (wheels_kib + tree_kib + 1023) / 1024 ))
if [ "$total_mib" -gt "$limit_mib" ]; then
    echo "prepare.sh: wheels ($((wheels_kib / 1024)) MiB) + working tree ($((tree_kib / 1024)) MiB) = ${total_mib} MiB," \
         "over the ${limit_mib} MiB that travel" >&2
    exit 1
fi
rm -rf "$out"
mv "$staging" "$out"
echo "prepare.sh: $(ls "$out" | wc -l) wheels, $((wheels_kib / 1024)) MiB, in $out; with the working tree" \
     "${total_mib} of ${limit_mib} MiB" >&2
