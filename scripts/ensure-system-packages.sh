#!/usr/bin/env bash
# Installs the system packages the tests use when they are missing (Debian/Ubuntu, apt-get, as
# root or through sudo):
#   chromium  the web page's browser tests (tests/tests/serve.rs drive it headless)
#   libheif1  HEIF/HEIC/AVIF decoding (jsearch loads libheif at run time; tests/tests/photos.rs)
#   libraw    RAW files without an embedded preview (LibRaw, loaded at run time likewise):
#             libraw20 on Debian 12, libraw23 on later releases
#   postgresql + openssl  TLS to PostgreSQL (tests/tests/postgres.rs): the PyPI server the other
#             scale-out tests use is built without OpenSSL, Debian's is built with it
set -euo pipefail
need=()
have_chromium=0
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null && have_chromium=1
done
[ "$have_chromium" = 1 ] || need+=(chromium)
ldconfig -p 2>/dev/null | grep -q 'libheif\.so\.1' || need+=(libheif1)
if ! ldconfig -p 2>/dev/null | grep -q 'libraw_r\.so\.'; then
  if apt-cache show libraw23 >/dev/null 2>&1; then need+=(libraw23); else need+=(libraw20); fi
fi
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null || need+=(openssl)
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "missing ${need[*]} and this user cannot install them: apt-get install ${need[*]} (as root)" >&2
  exit 1
fi
command -v apt-get >/dev/null || { echo "missing ${need[*]}: install them with your package manager" >&2; exit 1; }
echo "installing ${need[*]} (for the tests)..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q "${need[@]}" >/dev/null
}
