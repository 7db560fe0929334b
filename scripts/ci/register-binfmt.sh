#!/usr/bin/env bash
# Register the arm64 (aarch64) binfmt_misc handler of qemu-user and prove it works
# by running an arm64 program. The one place that does this: scripts/ci/setup-podman.sh
# (molecule, the wheelhouse, the image build) and image/build.sh call it.
#
#   scripts/ci/register-binfmt.sh     # as root; exit 0 only if an arm64 binary ran
#
# Why not update-binfmts: qemu-user >= 9 (Debian 13, bookworm-backports) ships its
# handlers as systemd-binfmt files (/usr/lib/binfmt.d/qemu-aarch64.conf), not in
# binfmt-support's database, and on a machine without a running systemd nothing reads
# them: `update-binfmts --enable qemu-aarch64` answers "not in database". A handler
# left registered by an earlier run hid that once; here the file's own line is
# written to the kernel, which is what systemd-binfmt does at boot. update-binfmts
# stays as the fallback for qemu-user-static < 9 (binfmt-support's database).
#
# Flags: F (fix binary: works in containers whose root fs has no qemu), O (open
# binary: the kernel hands qemu an fd, so execveat() of an O_CLOEXEC fd works;
# systemd >= 255 starts every service that way), P (keep argv[0]). Whatever the
# definition says, the handler ends up registered with POF.
set -euo pipefail

name=qemu-aarch64
misc=/proc/sys/fs/binfmt_misc
entry=$misc/$name

log() { printf '[register-binfmt] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

if [[ ! -e $misc/register ]]; then
    mount -t binfmt_misc binfmt_misc "$misc" || die "cannot mount binfmt_misc on $misc"
    log "mounted binfmt_misc"
fi

# The definition, from the first place that has it: ":name:type:offset:magic:mask:interpreter:flags".
definition() {
    local f
    for f in /etc/binfmt.d/$name.conf /run/binfmt.d/$name.conf /usr/lib/binfmt.d/$name.conf; do
        if [[ -r $f ]]; then
            grep -v -e '^[#;]' -e '^[[:space:]]*$' "$f" | head -n1
            return
        fi
    done
}

if [[ ! -e $entry ]]; then
    line=$(definition)
    if [[ -n $line ]]; then
        printf '%s' "$line" >"$misc/register" || die "the kernel refused the line of $name.conf: $line"
        log "registered $name from its binfmt.d file"
    elif command -v update-binfmts >/dev/null && update-binfmts --display "$name" >/dev/null 2>&1; then
        update-binfmts --enable "$name" || die "update-binfmts --enable $name failed"
        log "registered $name through binfmt-support"
    else
        die "no binfmt definition for $name: install qemu-user-static (>= 8; scripts/ci/setup-podman.sh does)"
    fi
fi
[[ -e $entry ]] || die "$entry is missing after registration"
grep -qx enabled "$entry" || echo 1 >"$entry"

flags=$(sed -n 's/^flags: //p' "$entry")
if [[ $flags != *O* || $flags != *F* || $flags != *P* ]]; then
    interp=$(sed -n 's/^interpreter //p' "$entry")
    magic=$(sed -n 's/^magic //p' "$entry")
    mask=$(sed -n 's/^mask //p' "$entry")
    hex() { sed -E 's/(..)/\\x\1/g' <<<"$1"; }
    echo -1 >"$entry"
    printf '%s' ":$name:M::$(hex "$magic"):$(hex "$mask"):$interp:POF" >"$misc/register"
    log "re-registered $name with flags POF (was ${flags:-none})"
fi

# The proof: a 132-byte static arm64 ELF (exit(42) through the exit syscall) must run.
probe=$(mktemp /tmp/ddc-arm64-probe.XXXXXX)
trap 'rm -f "$probe"' EXIT
printf '%b' \
    '\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00\x01\x00\x00\x00' \
    '\x78\x00\x40\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' \
    '\x00\x00\x00\x00\x40\x00\x38\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05\x00\x00\x00' \
    '\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00' \
    '\x84\x00\x00\x00\x00\x00\x00\x00\x84\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00' \
    '\x40\x05\x80\xd2\xa8\x0b\x80\xd2\x01\x00\x00\xd4' >"$probe"
chmod 0755 "$probe"
rc=0
"$probe" 2>/dev/null || rc=$?
[[ $rc -eq 42 ]] || die "an arm64 binary does not run through $entry (exit $rc, expected 42): $(tr '\n' ' ' <"$entry")"
log "$name: $(sed -n 's/^interpreter //p' "$entry") flags $(sed -n 's/^flags: //p' "$entry"); an arm64 binary runs"
