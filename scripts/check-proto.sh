#!/usr/bin/env bash
# Protobuf (`imgnorm_proto`, `pb::`) belongs at the edge: the wire conversions,
# the gRPC service adapter, the worker's session and the gRPC clients. This
# fails when any other file of the runtime crate uses it, or when the pure
# core depends on the proto crate. PENDING lists files that still use it and
# are being moved off it (issue 17: the master's job logic and its database
# take domain types); remove a file from PENDING once it is clean, never add.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SRC=crates/imgnorm/src
ALLOWED=(
  wire.rs                 # domain <-> protobuf conversions
  master/convert.rs       # the master's job-logic types <-> protobuf
  master/state/tests.rs   # the runtime's tests read the messages it sends
  master/store/tests.rs   # builds schema-1 databases, which held protobuf blobs
  master/service.rs       # the gRPC service adapter
  worker/mod.rs           # the worker's session
  worker/pool.rs          # the worker's session: results and output chunks sent
  security/mod.rs         # the gRPC client type (with its interceptor)
  app.rs                  # the gRPC client commands: submit, status, wait
)
PENDING=(
  master/mod.rs           # Master::status builds pb::StatusResponse; lease sending
  master/state.rs         # job logic builds leases and status messages
  master/autoscale_view.rs  # AutoscaleView::to_status
  autoscale/mod.rs        # reads pb::WorkerStatus from Master::status
)

fail=0
while IFS= read -r f; do
  rel=${f#"$SRC"/}
  ok=0
  for a in "${ALLOWED[@]}" "${PENDING[@]}"; do
    [[ $rel == "$a" ]] && ok=1
  done
  if [[ $ok == 0 ]]; then
    echo "protobuf used outside the wire edge: $f"
    fail=1
  fi
done < <(grep -rlE 'imgnorm_proto|(^|[^:_[:alnum:]])pb::' "$SRC" --include='*.rs' | sort)

for p in "${PENDING[@]}"; do
  if ! grep -qE 'imgnorm_proto|(^|[^:_[:alnum:]])pb::' "$SRC/$p" 2>/dev/null; then
    echo "note: $SRC/$p no longer uses protobuf: remove it from PENDING in $0"
  fi
done

if grep -q 'imgnorm-proto' crates/imgnorm-core/Cargo.toml; then
  echo "crates/imgnorm-core depends on imgnorm-proto: the core must stay free of the wire"
  fail=1
fi
exit $fail
