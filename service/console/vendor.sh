#!/usr/bin/env bash
# Vendors the console's two browser libraries from the npm registry into static/vendor/
# (`make console-assets`). The output is committed: the package and `bentoml build` never
# need npm or the network. Each tarball's integrity is checked against the one pinned here,
# and name, version, licence and integrity are written to static/vendor/VERSIONS.
set -euo pipefail
cd "$(dirname "$0")"
OUT=static/vendor
# name version licence integrity files-to-copy (path in the tarball -> name in $OUT)
PINS=(
  "uplot 1.6.32 MIT sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw== dist/uPlot.iife.min.js:uPlot.iife.min.js,dist/uPlot.min.css:uPlot.min.css,LICENSE:LICENSE.uplot"
  "axe-core 4.11.1 MPL-2.0 sha512-BASOg+YwO2C+346x3LZOeoovTIoTrRqEsqMa6fmfAV0P+U9mFr9NsyOEpiYvFjbc64NMrSswhV50WdXzdb/Z5A== axe.min.js:axe.min.js,LICENSE:LICENSE.axe-core"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"
{
  echo "# Vendored by service/console/vendor.sh (make console-assets); do not edit by hand."
  echo "# name version licence npm-integrity"
} > "$OUT/VERSIONS"
for pin in "${PINS[@]}"; do
  read -r name version licence integrity files <<<"$pin"
  got=$(cd "$work" && npm pack --json --silent "$name@$version" |
        python3 -c "import json, sys; p = json.load(sys.stdin)[0]; print(p['integrity'], p['filename'])")
  read -r sri tarball <<<"$got"
  [ "$sri" = "$integrity" ] || { echo "$name@$version: integrity $sri != pinned $integrity" >&2; exit 1; }
  mkdir -p "$work/$name" && tar xzf "$work/$tarball" -C "$work/$name"
  IFS=, read -ra pairs <<<"$files"
  for pair in "${pairs[@]}"; do
    cp "$work/$name/package/${pair%%:*}" "$OUT/${pair##*:}"
  done
  echo "$name $version $licence $integrity" >> "$OUT/VERSIONS"
done
ls -l "$OUT"
