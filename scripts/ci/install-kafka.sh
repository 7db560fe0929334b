#!/usr/bin/env bash
# Make a fresh Debian 12 box (as root) able to run the real-Kafka tests:
#   1. Java (17 headless; any >= 17 already present is kept) and Maven, from
#      Debian's packages, installed only when missing;
#   2. the broker jars of every version in tests/kafka/versions.txt, fetched
#      from Maven Central by scripts/fetch-kafka.sh into
#      ${DDC_CACHE:-$HOME/.cache/ddc}/kafka/VERSION/libs (cached; a re-run with
#      the cache present takes well under a second).
# The Python side (confluent-kafka, pytest) comes from the project's own
# requirements, not from here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

java_major() {
    # "openjdk version "17.0.15" 2025-04-15" -> 17 ; "1.8.0_x" -> 1
    java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n1
}

need=()
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
    need+=(java)
fi
command -v mvn >/dev/null 2>&1 || need+=(maven)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-kafka: missing ${need[*]}; run me as root to apt-get install them" >&2
        exit 1
    fi
    # shellcheck source=scripts/ci/lib/apt.sh
    . "$here/lib/apt.sh"
    ddc_apt_update
    pkgs=()
    for n in "${need[@]}"; do
        case "$n" in
            java)
                # Debian 12 has openjdk-17; later releases only a newer default JRE
                # (Kafka 3.9 and 4.x run on 17 and 21 alike).
                if apt-cache show openjdk-17-jre-headless >/dev/null 2>&1; then
                    pkgs+=(openjdk-17-jre-headless)
                else
                    pkgs+=(default-jre-headless)
                fi
                ;;
            maven) pkgs+=(maven) ;;
        esac
    done
    ddc_apt_install "${pkgs[@]}"
fi

echo "install-kafka: $(java -version 2>&1 | head -n1); $(mvn -v 2>/dev/null | head -n1 | sed 's/\x1b\[[0-9;]*m//g')" >&2
# every version in tests/kafka/versions.txt
"$repo/scripts/fetch-kafka.sh"
