#!/bin/sh
# Build the xdphooks framework and sample plugins (.rpm and .deb) into
# build/pkgs/. See packaging/build_all.py --help.
set -e
exec /usr/bin/python3 "$(dirname "$0")/build_all.py" "$@"
