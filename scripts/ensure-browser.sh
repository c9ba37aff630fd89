#!/bin/sh
# Install Debian's chromium for the dashboard's browser test, where it is missing and we can.
# Never fails the build: without a browser the browser test skips and says why.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: chromium is missing and apt-get cannot be run here (not root or no apt);" \
         "the browser test will skip" >&2
    exit 0
fi
echo "ensure-browser: installing Debian's chromium with apt-get" >&2
DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || echo "ensure-browser: apt-get could not install chromium; the browser test will skip" >&2
exit 0
