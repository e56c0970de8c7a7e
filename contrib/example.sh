#!/usr/bin/env bash
# A working example: two tiny web servers on 127.0.0.1:8001 and :8002, and
# pen on 127.0.0.1:8080 in front of them (round robin, foreground, debug).
# Try it from another terminal:  curl http://127.0.0.1:8080/   (twice)
# Ctrl-C stops pen and both backends.
set -eu
PORT=${PORT:-8080}
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
for n in 1 2; do
    mkdir -p "$dir/www$n"
    echo "hello from backend $n" > "$dir/www$n/index.html"
    python3 -m http.server --bind 127.0.0.1 --directory "$dir/www$n" "800$n" >/dev/null 2>&1 &
    pids+=($!)
done
echo "pen listening on 127.0.0.1:$PORT -> 127.0.0.1:8001, 127.0.0.1:8002"
echo "try: curl http://127.0.0.1:$PORT/"
pen -f -r -d "127.0.0.1:$PORT" 127.0.0.1:8001 127.0.0.1:8002 &
pids+=($!)
wait "${pids[-1]}"
