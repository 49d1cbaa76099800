#!/usr/bin/env bash
# The independent S/MIME receivers the interop tests run besides the openssl CLI: Bouncy Castle (the Java
# stack under most commercial AS2 servers, Debian's packages plus a JDK to compile tests/interop/) and
# GnuPG's gpgsm. Installs only what is missing; quiet, non-interactive.
set -euo pipefail
packages=(libbcprov-java libbcpkix-java libbcutil-java libbcmail-java libmail-java libactivation-java
  openjdk-17-jdk-headless gpgsm)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing interop receivers: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
