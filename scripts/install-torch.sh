#!/usr/bin/env bash
# PyTorch's CPU build into the virtualenv of $1 (its python), before anything that depends on it.
# Resolved from PyPI alone, torch==2.13.0 is the CUDA build: gigabytes of GPU libraries that a
# CPU-only embedding model never uses. So PyTorch's own CPU index comes first, with a short
# timeout; where it cannot be reached, the configured index is used (a mirror, or a local wheel
# directory that holds the CPU build).
set -euo pipefail
py="$1"
version="${TORCH_VERSION:-2.13.0}"
index="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
timeout="${TORCH_INDEX_TIMEOUT:-10}"
if "$py" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null; then
  echo "torch $version already installed"
  exit 0
fi
# One quick look first: pip itself would wait out its timeout once per package on a dead route.
if "$py" -c "import urllib.request; urllib.request.urlopen('$index/torch/', timeout=$timeout)" 2>/dev/null; then
  echo "torch $version: from PyTorch's CPU index ($index)"
  if "$py" -m pip install --quiet --timeout "$timeout" --index-url "$index" "torch==$version"; then
    exit 0
  fi
fi
echo "torch $version: the CPU index could not be used; installing from the configured index" \
  "(from PyPI itself that is the CUDA build, several GB)"
"$py" -m pip install --quiet "torch==$version"
