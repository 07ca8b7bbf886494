# Shared by scripts/*: locate the repo and put the project's own Node first on PATH.
# Sourced, not executed.
MICROAGENT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MICROAGENT_ROOT
if [ -x "$MICROAGENT_ROOT/.tools/bin/node" ]; then
  export PATH="$MICROAGENT_ROOT/.tools/bin:$PATH"
fi
log() { printf '[microagent] %s\n' "$*" >&2; }
