#!/usr/bin/env bash
# Debian libraries that Blender's Python module (bpy) loads; installed only when missing and
# only where we may (root with apt-get). Elsewhere the Blender tests skip with a reason.
set -u
libs="libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libxext6 libxcb1 libsm6 libice6 libgl1"
command -v dpkg-query >/dev/null 2>&1 || exit 0
missing=""
for lib in $libs; do
  dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || missing="$missing $lib"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Blender's system libraries:$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 \
    || echo "warning: could not install$missing; Blender tests will be skipped"
else
  echo "note: Blender (bpy) needs$missing; install them to run the Blender tests"
fi
exit 0
