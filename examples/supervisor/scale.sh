#!/bin/sh
# tideway autoscale hook for Supervisor: run N chat processes, N = $TIDEWAY_BACKENDS.
# Starts chat_<first>..chat_<first+N-1> and stops the others (they drain before exiting).
# Arguments are passed to supervisorctl (e.g. -c /etc/supervisor/supervisord.conf).
#
#   [upstream.chat.autoscale]
#   exec = "/etc/tideway/scale.sh"
#   env = ["CHAT_FIRST", "CHAT_MAX"]   # the hook's environment is clean: pass these on if set
set -eu
N=${TIDEWAY_BACKENDS:?TIDEWAY_BACKENDS is set by tideway}
FIRST=${CHAT_FIRST:-7001}
MAX=${CHAT_MAX:-10}
start="" stop=""
i=0
while [ "$i" -lt "$MAX" ]; do
    name="chat:chat_$((FIRST + i))"
    if [ "$i" -lt "$N" ]; then start="$start $name"; else stop="$stop $name"; fi
    i=$((i + 1))
done
# Start first: the new processes register while the leaving ones still serve. Stops run side
# by side: each waits for its process to drain (up to its stopwaitsecs), and one after the
# other they would add up past the hook's timeout.
if [ -n "$start" ]; then supervisorctl "$@" start $start; fi
for name in $stop; do supervisorctl "$@" stop "$name" & done
wait
echo "chat: $N of $MAX running (was ${TIDEWAY_PREVIOUS_BACKENDS:-?})"
