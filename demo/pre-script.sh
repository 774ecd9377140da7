#!/bin/sh
# Demo pre-script: ask the application to quiesce and wait (at most 10 s) until it has.
# $1: the application's control directory. Exit 0 only when the application is quiesced.
control=${1:?usage: pre-script.sh CONTROL_DIR}
touch "$control/quiesce"
tries=0
while [ ! -e "$control/quiesced" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 1000 ]; then
    echo "the application did not quiesce within 10 s" >&2
    rm -f "$control/quiesce"
    exit 1
  fi
  sleep 0.01
done
echo "application quiesced after record $(cat "$control/quiesced")"
