#!/usr/bin/env bash
# Builds the imgnorm container image from a static binary, with no base image
# to pull (FROM scratch). One command:
#
#     scripts/build-image.sh            # tags imgnorm:latest and imgnorm:<version>
#
# Environment:
#   CARGO_TARGET_DIR   reused as is, so a warm rebuild only relinks (default: ./target)
#   IMGNORM_IMAGE      image name (default: imgnorm)
#   IMGNORM_STRIP      debug (default): drop debug info, keep symbols (53 MB -> 11 MB;
#                      backtraces keep function names, lose line numbers);
#                      all: strip everything (9 MB); none: keep the binary as built
#   IMGNORM_SKIP_CARGO=1  reuse the binary already built (for tests that just built it)
# Prints the image id on the last line of stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=x86_64-unknown-linux-gnu
image="${IMGNORM_IMAGE:-imgnorm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker not found"
if command -v rustup >/dev/null; then
    rustup target list --installed | grep -qx "$target" \
        || die "rust target $target not installed (rustup target add $target)"
fi

if [[ "${IMGNORM_SKIP_CARGO:-0}" != 1 ]]; then
    command -v nasm >/dev/null || log "note: nasm not found: the JPEG decoder is built without SIMD" \
        "(same pixels, slower); scripts/nasm-deps.sh installs it"
    log "cargo build --release --target $target (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    # --target keeps these crt-static artifacts apart from the host build in the
    # same target dir, so the two never invalidate each other.
    (cd "$root" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked --target "$target" -p imgnorm)
fi
bin="$CARGO_TARGET_DIR/$target/release/imgnorm"
[[ -x "$bin" ]] || die "binary not found: $bin"

# A scratch image has no loader and no libc: refuse anything dynamic.
if command -v file >/dev/null; then
    desc="$(file -b "$bin")"
    [[ "$desc" == *"static"* ]] || die "binary is not static: $desc"
    [[ "$desc" != *"interpreter"* ]] || die "binary needs a dynamic loader: $desc"
fi
if command -v ldd >/dev/null && ldd "$bin" 2>&1 | grep -q '=>'; then
    die "binary links shared libraries: $(ldd "$bin" 2>&1 | tr '\n' ' ')"
fi

version="$("$bin" --version | awk '{print $2}')"
[[ -n "$version" ]] || die "cannot read the version from $bin --version"

ctx="$(mktemp -d "${TMPDIR:-/tmp}/imgnorm-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/etc/ssl/certs" "$ctx/data/input" "$ctx/data/output" "$ctx/data/tls" \
    "$ctx/data/state" "$ctx/tmp"
chmod 1777 "$ctx/tmp"
# Seeds compose's `tls` volume, where the master writes its self-signed
# certificate; sticky and open to all like /tmp, so a master running as
# another uid (IMGNORM_USER) can write it too (the key itself is 0600).
chmod 1777 "$ctx/data/tls"
# Seeds compose's `state` volume (the master's --data-dir), the same way.
chmod 1777 "$ctx/data/state"
case "${IMGNORM_STRIP:-debug}" in
    debug) strip --strip-debug -o "$ctx/imgnorm" "$bin" ;;
    all) strip -o "$ctx/imgnorm" "$bin" ;;
    none) cp "$bin" "$ctx/imgnorm" ;;
    *) die "IMGNORM_STRIP must be debug, all or none" ;;
esac
cat > "$ctx/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
imgnorm:x:10001:10001:imgnorm:/data:/sbin/nologin
PASSWD
cat > "$ctx/etc/group" <<'GROUP'
root:x:0:
imgnorm:x:10001:
GROUP
# Only local files and DNS; there is no NSS plugin in the image.
printf 'hosts: files dns\n' > "$ctx/etc/nsswitch.conf"
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/"
else
    log "warning: /etc/ssl/certs/ca-certificates.crt not found; the image has no CA bundle"
    : > "$ctx/etc/ssl/certs/ca-certificates.crt"
fi
cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"

log "docker build -t $image:latest -t $image:$version ($(du -h "$ctx/imgnorm" | cut -f1) binary)"
docker build -q --build-arg "VERSION=$version" \
    --label "org.opencontainers.image.revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -t "$image:latest" -t "$image:$version" "$ctx"
# The tags moved: drop our previous, now untagged builds (only ours, by label).
docker image prune -f --filter "label=org.opencontainers.image.title=imgnorm" >/dev/null
