#!/usr/bin/env bash
# Create or refresh the project's venv: `make run` and `make test` call this under one lock
# (flock on .venv.lock), so two of them started together in a fresh clone do not race on .venv.
# Usage: deploy/make-venv.sh PYTHON VENV
set -euo pipefail
python=$1 venv=$2
stamp="$venv/.installed"
# Another make may have built it while this one waited for the lock.
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[test]'
touch "$stamp"
