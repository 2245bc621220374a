# Sourced by the scripts: creates .venv and installs conveyor with its test tools when needed.
if [ ! -x .venv/bin/conveyor ] || [ pyproject.toml -nt .venv/.installed ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[test]'
  touch .venv/.installed
fi
