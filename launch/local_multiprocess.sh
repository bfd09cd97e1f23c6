#!/usr/bin/env bash
# N processes of one multi-process (multi-host) run on this machine's CPU, their collectives over gloo:
# the multi-host code path, tested here before paying for a pod.
#   launch/local_multiprocess.sh N --config=configs/default.py --workdir=/tmp/mh [--config.key=value ...]
# Every argument after N goes to each `python3 -m $MODULE`, which also gets --coordinator_address,
# --num_processes and --process_id. Environment:
#   MODULE               the entry point (default aigc_jax.main; aigc_jax.benchmark works the same way)
#   DEVICES_PER_PROCESS  fake CPU devices per process (default 4)
#   PORT                 coordinator port on localhost (default: a free one)
#   LOG_DIR              per-process logs process_<i>.log (default: a new temporary directory)
#   STOP_AFTER_FAILURE   seconds the others get to stop after one fails, before a hung one is killed (60)
# Process 0's log streams to the console. SIGINT/SIGTERM go to every process as SIGTERM: they agree on a
# step, save a checkpoint there and exit 0. Exits 0 once every process has; otherwise with the status of
# the first process to fail (the others then stop within --peer_timeout, naming it), after printing the end
# of its log. Of processes that end together, one that ended on losing a peer is not named first.
set -euo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N --config=CONFIG --workdir=WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
num_processes=$1
shift
cd "$(dirname "$0")/.."
# XLA:CPU allocates a step's large buffers afresh each step; glibc's malloc then asks for transparent huge
# pages instead of faulting in 4 KiB pages (glibc >= 2.35; ignored elsewhere).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
port=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
log_dir=${LOG_DIR:-$(mktemp -d -t aigc_multiprocess.XXXXXX)}
mkdir -p "$log_dir"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}"
export JAX_PLATFORMS=cpu

pids=()
for ((i = 0; i < num_processes; i++)); do
  python3 -m "${MODULE:-aigc_jax.main}" "$@" --coordinator_address="localhost:$port" --num_processes="$num_processes" \
    --process_id="$i" >"$log_dir/process_$i.log" 2>&1 &
  pids+=("$!")
  echo "process $i: pid $!, log $log_dir/process_$i.log"
done
# shellcheck disable=SC2317,SC2329  # called by the trap
stop_all() { kill -s TERM "${pids[@]}" 2>/dev/null || true; }
trap stop_all INT TERM
tail -n +1 -f --pid="${pids[0]}" "$log_dir/process_0.log" &
tail_pid=$!

lost_a_peer() {
  grep -qE "^error: process [0-9]+ of [0-9]+ .*; process $1 stops too$|terminate called after throwing an instance of 'gloo::|Terminating process because the JAX distributed service detected fatal errors" \
    "$log_dir/process_$1.log" 2>/dev/null
}

# Wait for every process, noting which failed first: when one dies, the others fail after it, naming it.
status=0
codes=()
failed=
failed_at=
ended_so_far=()  # processes that ended with an error before one was named, in the order seen
first_ended_at=
remaining=("${!pids[@]}")
while ((${#remaining[@]})); do
  if [[ -n $failed ]] && ((SECONDS - failed_at > ${STOP_AFTER_FAILURE:-60})); then
    # The others stop by themselves within --peer_timeout; one that does not is hung: end it.
    for i in "${remaining[@]}"; do kill -s KILL "${pids[$i]}" 2>/dev/null || true; done
  fi
  running=()
  ended=()
  for i in "${remaining[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      running+=("$i")
      continue
    fi
    code=0
    wait "${pids[$i]}" || code=$?
    codes[i]=$code
    if ((code != 0)); then ended+=("$i"); fi
  done
  if [[ -z $failed ]]; then
    # Several may end within a moment. One that ended because it lost a peer (its own error line names the
    # peer, or gloo or JAX's client aborted it on a lost connection) did not fail first when another ended
    # too, even one seen a poll later: such a process is named only when no other ends within 2 s.
    ended_so_far+=("${ended[@]}")
    if ((${#ended_so_far[@]})); then
      first_ended_at=${first_ended_at:-$SECONDS}
      for i in "${ended_so_far[@]}"; do
        if ! lost_a_peer "$i"; then failed=$i; break; fi
      done
      if [[ -z $failed ]] && ((SECONDS - first_ended_at >= 2 || ${#running[@]} == 0)); then
        failed=${ended_so_far[0]}
      fi
      if [[ -n $failed ]]; then
        status=${codes[failed]}
        failed_at=$SECONDS
      fi
    fi
  fi
  remaining=("${running[@]}")
  if ((${#remaining[@]})); then sleep 0.2; fi
done
wait "$tail_pid" 2>/dev/null || true
if [[ -n $failed ]]; then
  how="failed with status $status"
  if ((status > 128)); then how="was killed by SIG$(kill -l $((status - 128))) (status $status)"; fi
  echo "process $failed $how, the first to fail; the end of its log ($log_dir/process_$failed.log):" >&2
  tail -n 20 "$log_dir/process_$failed.log" >&2
fi
exit "$status"
