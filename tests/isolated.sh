#!/bin/sh
# Run a command inside a private network namespace (only loopback exists) when this machine allows it, else as is.
# Test servers (Orthanc listens on 0.0.0.0) then cannot be reached from outside, whatever they bind to.
if [ "$(id -u)" = 0 ]; then flags=-n; else flags=-rn; fi
if unshare $flags sh -c 'ip link set lo up' 2>/dev/null; then
  exec unshare $flags sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "note: no private network namespace available here; the tests use the host's loopback only" >&2
exec "$@"
