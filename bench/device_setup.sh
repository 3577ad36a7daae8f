# Sourced at the start of a device-tool command (bench/gpu_step.py on a lent GPU machine, which has no registry):
# installs the carried wheels (whl/) and flatline itself, and points flatline's cache at the carried tokenizer (tok/).
export PYTHONUNBUFFERED=1 FLATLINE_CACHE=/tmp/flatline-cache
# -L: tok may be a link to a carried folder; rm: a second call on a warm machine would copy into the old one
mkdir -p "$FLATLINE_CACHE/tokenizers" && rm -rf "$FLATLINE_CACHE/tokenizers/smollm2" && cp -rL tok "$FLATLINE_CACHE/tokenizers/smollm2"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir whl/*.whl 2>&1 | tail -2
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi -L; python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
