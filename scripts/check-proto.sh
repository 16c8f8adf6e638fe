#!/usr/bin/env bash
# Protobuf (`imgnorm_proto`, `pb::`) belongs at the edge: the wire conversions,
# the gRPC service adapter, the worker's session and the gRPC clients. This
# fails when any other file of the workspace's crates uses it, or when the
# pure core, the engine or the tools depend on the proto crate. PENDING lists
# files that still use it and are being moved off it (issue 17: the master's
# job logic and its database take domain types); remove a file from PENDING
# once it is clean, never add.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Paths relative to crates/; every crate's src/ is searched but the proto
# crate's own.
ALLOWED=(
  imgnorm-net/src/wire.rs                 # domain <-> protobuf conversions
  imgnorm-master/src/convert.rs           # the master's job-logic types <-> protobuf
  imgnorm-master/src/state/tests.rs       # the runtime's tests read the messages it sends
  imgnorm-master/src/store/tests.rs       # builds schema-1 databases, which held protobuf blobs
  imgnorm-master/src/service.rs           # the gRPC service adapter
  imgnorm-worker/src/lib.rs               # the worker's session
  imgnorm-worker/src/pool.rs              # the worker's session: results and output chunks sent
  imgnorm-net/src/security/mod.rs         # the gRPC client type (with its interceptor)
  imgnorm-app/src/app.rs                  # the gRPC client commands: submit, status, wait
)
PENDING=(
  imgnorm-master/src/lib.rs               # Master::status builds pb::StatusResponse; lease sending
  imgnorm-master/src/state.rs             # job logic builds leases and status messages
  imgnorm-master/src/autoscale_view.rs    # AutoscaleView::to_status
  imgnorm-app/src/autoscale/mod.rs        # reads pb::WorkerStatus from Master::status
)

fail=0
while IFS= read -r f; do
  rel=${f#crates/}
  ok=0
  for a in "${ALLOWED[@]}" "${PENDING[@]}"; do
    [[ $rel == "$a" ]] && ok=1
  done
  if [[ $ok == 0 ]]; then
    echo "protobuf used outside the wire edge: $f"
    fail=1
  fi
done < <(find crates -path 'crates/*/src/*' -name '*.rs' -not -path 'crates/imgnorm-proto/*' -print0 |
  xargs -0 grep -lE 'imgnorm_proto|(^|[^:_[:alnum:]])pb::' | sort)

for p in "${PENDING[@]}"; do
  if ! grep -qE 'imgnorm_proto|(^|[^:_[:alnum:]])pb::' "crates/$p" 2>/dev/null; then
    echo "note: crates/$p no longer uses protobuf: remove it from PENDING in $0"
  fi
done

for c in imgnorm-core imgnorm-engine imgnorm-tools; do
  if grep -q '^imgnorm-proto' "crates/$c/Cargo.toml"; then
    echo "crates/$c depends on imgnorm-proto: it must stay free of the wire"
    fail=1
  fi
done
exit $fail
