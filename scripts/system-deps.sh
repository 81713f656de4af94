#!/usr/bin/env bash
# The Debian packages docqa needs, installed only where missing, said in one line first.
#   scripts/system-deps.sh serve   what `make serve` needs: Tesseract OCR with English
#   scripts/system-deps.sh test    that, plus what the test suite drives for real: more OCR
#                                  languages, Chromium (browser tests), nginx (the gateway)
#                                  and docker-compose (validates docker-compose.yml)
set -euo pipefail
purpose="${1:-test}"
wanted=(tesseract-ocr tesseract-ocr-eng)
if [ "$purpose" = test ]; then
  wanted+=(tesseract-ocr-fra tesseract-ocr-deu nginx chromium docker-compose)
elif [ "$purpose" != serve ]; then
  echo "usage: $0 serve|test" >&2
  exit 2
fi
need=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "system-deps ($purpose): Debian packages present: ${wanted[*]}"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps ($purpose): missing Debian packages: ${need[*]}; run \`sudo make system-deps\` (continuing without them)" >&2
  exit 0
fi
echo "system-deps ($purpose): installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
