#!/bin/sh
# Makes docs/img/hits-by-day.png, the README's picture of the charts: the demo feed run once into a fresh
# database, Datasette on it, and the dashboard page drawn by headless Chromium (Debian: apt-get install
# chromium). Run from anywhere: `sh docs/make-screenshot.sh`. Needs `pip install -e '.[datasette]'`.
set -eu
cd "$(dirname "$0")/.."
port=${PORT:-8765}
work=$(mktemp -d)
datasette_pid=
cleanup() {
    [ -n "$datasette_pid" ] && kill "$datasette_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

RINGSIDE_DB="$work/ringside.db" .venv/bin/python run_bot.py once > /dev/null
.venv/bin/datasette "$work/ringside.db" -m config/datasette.yml --plugins-dir config/datasette_plugins \
    -p "$port" > "$work/datasette.log" 2>&1 &
datasette_pid=$!
tries=0
until .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/-/versions')" \
    2> /dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || { cat "$work/datasette.log"; exit 1; }
    sleep 0.2
done
# --virtual-time-budget: Chromium waits (in page time) for the charts' data to load and Vega to draw them.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$work/chromium" --hide-scrollbars \
    --virtual-time-budget=15000 --window-size=1200,1160 --screenshot=docs/img/hits-by-day.png \
    "http://127.0.0.1:$port/-/dashboards/hits-by-day" 2> "$work/chromium.log" \
    || { cat "$work/chromium.log"; exit 1; }
echo "docs/img/hits-by-day.png: $(wc -c < docs/img/hits-by-day.png) bytes"
