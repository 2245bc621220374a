# Sourced by scripts/test: the programs the suite needs beyond Python (nginx for tests/deploy,
# Chromium for tests/browser, curl and jq for docs/api.md's examples). Installed with apt-get
# where that can be done (Debian or Ubuntu, as root); elsewhere, what is missing is printed and
# the test command stops.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v jq >/dev/null || missing+=(jq)
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "scripts/test: the suite needs ${missing[*]}: install them (e.g. sudo apt-get install ${missing[*]}) and run it again" >&2
    exit 1
  fi
fi
