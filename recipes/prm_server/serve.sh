#!/bin/bash
# Serve a step-classifier PRM with vLLM's pooling runner, one server per GPU group of this node, for
# reasonflux-rl's `prm_server_urls`.
#
#   recipes/prm_server/serve.sh reasonflux-prm-7b    # ReasonFlux-PRM-7B: one server per GPU (8 on a node of 8)
#   recipes/prm_server/serve.sh qwen-math-prm-7b     # Qwen2.5-Math-PRM-7B: the same layout
#   recipes/prm_server/serve.sh qwen-math-prm-72b    # Qwen2.5-Math-PRM-72B: tensor parallel 4, two servers per node
#
# It prints the URLs to put in `prm_server_urls` and waits until every server answers /health, then keeps them up.
# Install the pinned vLLM in the environment first: pip install -r recipes/prm_server/requirements.txt
#
# Reads these environment variables (all optional):
#   PRM_PATH               checkpoint directory (default /checkpoints/<the model's directory name below>)
#   TP                     GPUs per server (tensor parallel; default 1 for 7B, 4 for 72B)
#   GPUS                   GPUs of this node to use (default 8)
#   PORT                   first port; server i listens on PORT + i (default 8001)
#   MAX_MODEL_LEN          context of the PRM in tokens (default 4096, what the checkpoints were trained to;
#                          must be at least the training config's prm_max_length)
#   GPU_MEMORY_UTILIZATION fraction of each GPU vLLM may take (default 0.9)
#   VENV                   virtualenv to activate (default .venv)
set -euo pipefail

MODEL=${1:?usage: recipes/prm_server/serve.sh reasonflux-prm-7b|qwen-math-prm-7b|qwen-math-prm-72b}
case "$MODEL" in
    reasonflux-prm-7b) DIR=ReasonFlux-PRM-7B; DEFAULT_TP=1 ;;
    qwen-math-prm-7b) DIR=Qwen2.5-Math-PRM-7B; DEFAULT_TP=1 ;;
    qwen-math-prm-72b) DIR=Qwen2.5-Math-PRM-72B; DEFAULT_TP=4 ;;
    *) echo "unknown PRM $MODEL" >&2; exit 2 ;;
esac
PRM_PATH=${PRM_PATH:-/checkpoints/$DIR}
TP=${TP:-$DEFAULT_TP}
GPUS=${GPUS:-8}
PORT=${PORT:-8001}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.9}
VENV=${VENV:-.venv}
# <extra_0> in the Qwen2.5 vocabulary: the step tag of both ReasonFlux-PRM-7B and Qwen2.5-Math-PRM.
STEP_TAG_ID=151651

if [ $((GPUS % TP)) -ne 0 ]; then
    echo "GPUS=$GPUS is not a multiple of TP=$TP" >&2
    exit 2
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
HOST=$(hostname)
URLS=()
PIDS=()
for ((i = 0; i < GPUS / TP; i++)); do
    DEVICES=$(seq -s, $((i * TP)) $((i * TP + TP - 1)))
    CUDA_VISIBLE_DEVICES=$DEVICES vllm serve "$PRM_PATH" \
        --runner pooling \
        --served-model-name "$MODEL" \
        --pooler-config "{\"pooling_type\": \"STEP\", \"step_tag_id\": $STEP_TAG_ID}" \
        --tensor-parallel-size "$TP" \
        --max-model-len "$MAX_MODEL_LEN" \
        --dtype bfloat16 \
        --gpu-memory-utilization "$GPU_MEMORY_UTILIZATION" \
        --host 0.0.0.0 --port $((PORT + i)) &
    PIDS+=($!)
    URLS+=("http://$HOST:$((PORT + i))")
done
trap 'kill "${PIDS[@]}" 2>/dev/null' EXIT
for url in "${URLS[@]}"; do
    until curl -sf "$url/health" > /dev/null; do sleep 10; done
done
echo "PRM servers ready; in the training config:"
echo "  prm_server_urls: [$(IFS=,; echo "${URLS[*]}" | sed 's/,/, /g')]"
echo "  prm_server_model: $MODEL"
wait
