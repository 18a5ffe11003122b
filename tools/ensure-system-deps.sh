#!/usr/bin/env bash
# Makes sure the machine has what the embedded services need: Java 17+, Maven and
# the PostgreSQL server binaries. Installs missing ones from Debian's packages when
# run as root with apt-get; otherwise says exactly what is missing and fails.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "missing system packages: ${missing[*]} (Java 17+, Maven, PostgreSQL server)" >&2
    echo "install them with your package manager, or set KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL" >&2
    exit 1
fi
