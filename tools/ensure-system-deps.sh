#!/usr/bin/env bash
# Makes sure the machine has what the embedded services need: Java 17+, Maven, the
# PostgreSQL server binaries, Node.js 18.20+ with npm (Prism, the local Twilio API) and Go
# (it builds stripe-mock, the local Stripe API).
# Installs missing ones from Debian's packages when run as root with apt-get;
# otherwise says exactly what is missing and fails.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
# Prism (tools/twilio/package.json) needs Node.js 18.20.1 or newer; an older one is not replaced silently.
if command -v node >/dev/null 2>&1 \
    && ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a === 18 && b >= 20) ? 0 : 1)'; then
    echo "Node.js $(node --version) is too old: Prism (the local Twilio API) needs 18.20.1 or newer" >&2
    echo "upgrade it (Debian 12's nodejs package is 18.20.4)" >&2
    exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "missing system packages: ${missing[*]} (Java 17+, Maven, PostgreSQL server, Node.js 18.20+ with npm, Go)" >&2
    echo "install them with your package manager, or set KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL / STREAMAPP_TWILIO_API_URL / STREAMAPP_STRIPE_API_URL" >&2
    exit 1
fi
