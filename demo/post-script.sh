#!/bin/sh
# Demo post-script: let the application go on. Runs even when the pre-script failed.
control=${1:?usage: post-script.sh CONTROL_DIR}
rm -f "$control/quiesce"
echo "application resumed"
