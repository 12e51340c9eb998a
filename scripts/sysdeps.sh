#!/usr/bin/env bash
# Debian packages some tests need: the libraries that Blender's Python module (bpy) loads, and
# Chromium for the web player's tests (tests/test_web_player.py). Installed only when missing and
# only where we may (root with apt-get). Elsewhere those tests skip with a reason.
set -u
blender_libs="libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libxext6 libxcb1 libsm6 libice6 libgl1"
command -v dpkg-query >/dev/null 2>&1 || exit 0
missing=""
for lib in $blender_libs chromium; do
  dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || missing="$missing $lib"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages for the Blender and web player tests:$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 \
    || echo "warning: could not install$missing; the Blender / web player tests will be skipped"
else
  echo "note: the Blender (bpy) and web player tests need the Debian packages$missing; install them to run those tests"
fi
exit 0
