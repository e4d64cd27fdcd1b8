#!/usr/bin/env bash
# deepstream 7.0.2's own end-to-end suite (cucumber, 154 scenarios) with its three servers clustered by
# swarm: each server (server-6001, server-7001, server-8001) runs swarm's plugin against its own
# `python -m swarm node` sidecar, instead of the suite's in-process E2EClusterNode. See docs/deepstream.md.
#
#   bash integrations/deepstream/e2e/run.sh [cucumber arguments...]     e.g. --name "A single publisher"
#
# - deepstream's source (../shared/vendor/deepstream-7.0.2-src.tar.gz, or SWARM_DEEPSTREAM_E2E_TARBALL) is
#   unpacked into a cache outside the tracked tree (.cache/deepstream-e2e, git-ignored, or
#   SWARM_DEEPSTREAM_E2E_CACHE) and its npm dependencies are installed there once, reused while the
#   tarball, this recipe and Node's version stay the same;
# - harness.patch (beside this script) is applied to a pristine test-e2e/tools/e2e-harness.ts on every run;
# - deepstream-listen-lock.patch fixes two races of deepstream's listen/lock code that any cluster node
#   slower than one process.nextTick meets when the (random) lock leader is another server;
#   SWARM_E2E_DEEPSTREAM_FIXES=0 runs deepstream's code as shipped (docs/deepstream.md has the evidence);
# - SWARM_E2E_CLUSTER=inprocess runs the same patched suite on the in-process E2EClusterNode (no swarm);
# - exit code: the suite's; 0 with a `skipped:` line where node, npm or the tarball is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
tarball="${SWARM_DEEPSTREAM_E2E_TARBALL:-$root/../shared/vendor/deepstream-7.0.2-src.tar.gz}"
cache="${SWARM_DEEPSTREAM_E2E_CACHE:-$root/.cache/deepstream-e2e}"
cluster="${SWARM_E2E_CLUSTER:-swarm}"
fixes="${SWARM_E2E_DEEPSTREAM_FIXES:-1}"
top=deepstream-7.0.2
harness="test-e2e/tools/e2e-harness.ts"
# bounds (seconds): a cold `npm install` of ~680 packages takes well under a minute with a reachable
# registry; the suite takes a few minutes; a node joins in a second or two
install_timeout=900
suite_timeout=2400
node_timeout=30

say() { echo "e2e: $*" >&2; }
skip() { echo "skipped: deepstream e2e suite over swarm: $*"; exit 0; }

command -v node >/dev/null || skip "node is not on PATH"
command -v npm >/dev/null || skip "npm is not on PATH"
[ -f "$tarball" ] || skip "deepstream's source $tarball is absent"
case "$cluster" in swarm|inprocess) ;; *) say "SWARM_E2E_CLUSTER must be swarm or inprocess"; exit 2 ;; esac
case "$fixes" in 0|1) ;; *) say "SWARM_E2E_DEEPSTREAM_FIXES must be 0 or 1"; exit 2 ;; esac
if [ "$cluster" = swarm ]; then
    "$python" -c 'import swarm' 2>/dev/null || { say "$python cannot import swarm (set PYTHON)"; exit 2; }
fi

# ------------------------------------------------------------------ deepstream and its npm packages, cached
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # another run installing into the same cache
# what the install depends on: the tarball, the way package.json is changed (below), node and npm
recipe_version=1
stamp="$(printf '%s %s %s %s' "$(sha256sum "$tarball" | cut -d' ' -f1)" "$recipe_version" \
    "$(node --version)" "$(npm --version)" | sha256sum | cut -d' ' -f1)"
src="$cache/$top"
if [ "$(cat "$cache/.installed" 2>/dev/null)" != "$stamp" ] || [ ! -d "$src/node_modules/cucumber" ]; then
    say "unpacking $tarball and installing its npm dependencies into $cache"
    rm -rf "$src" "$cache/.installed"
    tar xzf "$tarball" -C "$cache"
    # uWebSockets.js is a git dependency no registry serves (and only loaded for httpServer.type uws, which
    # the suite uses only with uws=true): an empty local package stands in, as in tests/test_deepstream.py
    mkdir -p "$src/empty-uws"
    echo '{"name": "uWebSockets.js", "version": "0.0.0-empty", "main": "index.js"}' > "$src/empty-uws/package.json"
    echo "throw new Error('uWebSockets.js is not installed: use httpServer.type default')" > "$src/empty-uws/index.js"
    (cd "$src" && node -e '
        const fs = require("fs")
        const manifest = JSON.parse(fs.readFileSync("package.json", "utf8"))
        manifest.dependencies["uWebSockets.js"] = "file:./empty-uws"
        manifest.overrides = { "uWebSockets.js": "file:./empty-uws" }
        fs.writeFileSync("package.json", JSON.stringify(manifest, null, 2) + "\n")')
    started=$SECONDS
    (cd "$src" && timeout "$install_timeout" npm install --no-audit --no-fund --ignore-scripts --prefer-offline \
        --loglevel=error </dev/null) || { say "npm install failed or took over ${install_timeout} s"; exit 1; }
    say "npm install took $((SECONDS - started)) s"
    echo "$stamp" > "$cache/.installed"
fi
# deepstream's code and suite as shipped (which also undoes any local edit), then the patches
tar xzf "$tarball" -C "$cache" "$top/src" "$top/test-e2e"
patch --quiet --forward -p1 -d "$src" < "$here/harness.patch"
if [ "$fixes" = 1 ]; then
    patch --quiet --forward -p1 -d "$src" < "$here/deepstream-listen-lock.patch"
fi
flock -u 9

# ------------------------------------------------------------------ three swarm nodes named after the servers
work="$(mktemp -d "${TMPDIR:-/tmp}/swarm-ds-e2e.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# the first line of $1 that starts with $2, within node_timeout seconds while process $3 lives
wait_line() {
    local deadline=$((SECONDS + node_timeout)) line
    while [ $SECONDS -lt $deadline ]; do
        line="$(grep -m1 "^$2" "$1" 2>/dev/null || true)"
        if [ -n "$line" ]; then echo "$line"; return 0; fi
        kill -0 "$3" 2>/dev/null || { say "swarm node exited: $(tail -5 "$1")"; return 1; }
        sleep 0.1
    done
    say "no '$2' in $1 within ${node_timeout} s: $(tail -5 "$1")"
    return 1
}

if [ "$cluster" = swarm ]; then
    bridges="{"
    seed=""
    for name in server-6001 server-7001 server-8001; do
        seeds="[]"
        [ -n "$seed" ] && seeds="[\"$seed\"]"
        cat > "$work/$name.json" <<EOF
{"serverName": "$name", "plugins": {"message": {"type": "direct", "options":
  {"host": "127.0.0.1", "port": 0, "seedNodes": $seeds, "bridge": "$work/$name.sock"}}}}
EOF
        PYTHONUNBUFFERED=1 "$python" -m swarm node --config "$work/$name.json" \
            </dev/null >"$work/$name.log" 2>&1 &
        pids+=($!)
        address="$(wait_line "$work/$name.log" "listening $name " "$!")"
        [ -n "$seed" ] || seed="${address##* }"
        bridges+="\"$name\": \"$work/$name.sock\", "
    done
    for i in 0 1 2; do
        name="server-$((6001 + 1000 * i))"
        wait_line "$work/$name.log" "ready $name" "${pids[$i]}" >/dev/null
    done
    export SWARM_E2E_BRIDGES="${bridges%, }}"
    export SWARM_E2E_PLUGIN="$root/integrations/deepstream"
    say "swarm nodes ready (logs in $work); bridges $SWARM_E2E_BRIDGES; deepstream fixes: $fixes"
else
    unset SWARM_E2E_BRIDGES
    say "in-process E2EClusterNode (no swarm); deepstream fixes: $fixes"
fi

# ------------------------------------------------------------------ the suite
started=$SECONDS
status=0
(cd "$src" && timeout "$suite_timeout" npm run --silent e2e -- "$@" </dev/null) || status=$?
say "suite exited $status after $((SECONDS - started)) s"
if [ "$status" -ne 0 ] && [ "$cluster" = swarm ]; then
    for name in server-6001 server-7001 server-8001; do
        say "last lines of swarm node $name:"; tail -5 "$work/$name.log" >&2 || true
    done
fi
exit "$status"
