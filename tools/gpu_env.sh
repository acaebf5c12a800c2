#!/bin/bash
# Sourced by the GPU scripts: the Python to use ($PY) and the environment, with diffusers (and
# importlib_metadata) installed from .gpu/whl on a CUDA machine, whose image lacks them.
# Writes the device and library versions to $1.
if [ "${DEVICE:-cuda}" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  PY=python3
else
  PY=${PY:-.venv/bin/python}
fi
export PYTHONUNBUFFERED=1 ADAQUAL_ASSETS=$PWD/.gpu/shared
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY -c 'import torch, diffusers, transformers, accelerate; print("torch", torch.__version__,
  "diffusers", diffusers.__version__, "transformers", transformers.__version__, "accelerate",
  accelerate.__version__, "cuda", torch.cuda.is_available())'; } > "$1" 2>&1
cat "$1"
