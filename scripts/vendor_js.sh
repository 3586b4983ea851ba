#!/usr/bin/env bash
# Vendor the JavaScript the static book needs, from the npm registry, so pages render offline:
#   require.js + @jupyter-widgets/html-manager  (static widget state, loaded only on pages with widgets)
#   MathJax 3 (tex-chtml-full + its CHTML fonts)  (every page with math)
# The files are committed under book/_static_vendor/vendored/ (copied to _build/html/_static/vendored/).
# Re-run this script only to change a version; _config.yml names the paths.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREJS=2.3.4
HTML_MANAGER=1.0.6
MATHJAX=3.2.2
DEST=book/_static_vendor/vendored

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "requirejs@$REQUIREJS" "@jupyter-widgets/html-manager@$HTML_MANAGER" "mathjax@$MATHJAX" >/dev/null)
for t in "$tmp"/*.tgz; do
    mkdir -p "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"
done

rm -rf "$DEST"
mkdir -p "$DEST/requirejs-$REQUIREJS" "$DEST/html-manager-$HTML_MANAGER" "$DEST/mathjax-$MATHJAX/output/chtml/fonts"

cp "$tmp/requirejs-$REQUIREJS/package/require.js" "$DEST/requirejs-$REQUIREJS/"
cp "$tmp/jupyter-widgets-html-manager-$HTML_MANAGER/package/dist/embed-amd.js" \
   "$tmp/jupyter-widgets-html-manager-$HTML_MANAGER/package/LICENSE" "$DEST/html-manager-$HTML_MANAGER/"
mj="$tmp/mathjax-$MATHJAX/package"
cp "$mj/es5/tex-chtml-full.js" "$mj/LICENSE" "$DEST/mathjax-$MATHJAX/"
cp -r "$mj/es5/output/chtml/fonts/woff-v2" "$DEST/mathjax-$MATHJAX/output/chtml/fonts/"

{
    echo "Vendored from the npm registry by scripts/vendor_js.sh (npm pack verifies each tarball's integrity)."
    echo "requirejs@$REQUIREJS (MIT), @jupyter-widgets/html-manager@$HTML_MANAGER (BSD-3-Clause), mathjax@$MATHJAX (Apache-2.0)"
    echo
    (cd "$DEST" && find . -type f ! -name SHA256SUMS.txt | LC_ALL=C sort | xargs sha256sum)
} > "$DEST/SHA256SUMS.txt"
du -sh "$DEST"
