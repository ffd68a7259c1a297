#!/usr/bin/env bash
# Schemathesis against a live pilot-server, once on SQLite and once on PostgreSQL: every
# operation of /api/openapi.json with generated valid and invalid requests, then the stateful
# phase that chains real ids through the document's OpenAPI links. The bar: no server error, no
# answer outside its documented status codes, schemas and content types. The server and
# Schemathesis run in a network namespace with only loopback (generated plans name arbitrary
# hosts: nothing can leave the machine); PostgreSQL is reached through its Unix socket.
#
# Usage: .ci/schemathesis.sh PILOT_SERVER_BINARY [MAX_EXAMPLES] [MAX_SECONDS_PER_BACKEND]
set -euo pipefail

server_bin=$1
max_examples=${2:-25}
max_time=${3:-150}
venv=${PILOT_ST_VENV:-/var/tmp/pilot-ci-venv}
st_version=4.32.5
pg_socket=${PILOT_ST_PG_SOCKET:-/var/run/postgresql}
export PGOPTIONS="--client-min-messages=warning"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$st_version"; then
  echo "installing schemathesis $st_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$st_version"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One backend: start the server inside the namespace, run Schemathesis, stop the server, and
# report. Runs as the namespace's init script.
cat > "$work/one.sh" <<'SH'
#!/usr/bin/env bash
set -uo pipefail
backend=$1 server_bin=$2 venv=$3 max_examples=$4 max_time=$5 work=$6
ip link set lo up
dir=$work/$backend
mkdir -p "$dir"
export PILOT_DATA_DIR=$dir/data PILOT_BIND=127.0.0.1:18089 PILOT_LOG=warn \
       PILOT_OPENAI_BASE_URL=http://127.0.0.1:9 PILOT_GROQ_BASE_URL=http://127.0.0.1:9 \
       PILOT_REQUESTS_PER_MINUTE=0 PILOT_AUTH_FAILURES_PER_MINUTE=0 PILOT_HOOK_CALLS_PER_MINUTE=0
if [ "$backend" = postgres ]; then
  export PILOT_DATABASE_URL=$PILOT_ST_PG_URL
  export PILOT_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
fi
"$server_bin" 2> "$dir/server.err" &
server=$!
for _ in $(seq 1 300); do
  [ -s "$dir/data/admin-token" ] && break
  kill -0 $server 2>/dev/null || { echo "the server exited:"; cat "$dir/server.err"; exit 1; }
  sleep 0.2
done
"$venv/bin/schemathesis" run http://127.0.0.1:18089/api/openapi.json \
  -H "Authorization: Bearer $(cat "$dir/data/admin-token")" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
  --max-examples "$max_examples" --request-timeout 10 --max-time "$max_time" \
  --no-color > "$dir/st.out" 2>&1
status=$?
kill $server; wait $server
if [ "$status" -eq 0 ]; then tail -n 25 "$dir/st.out"; else cat "$dir/st.out"; fi
panics=$(grep -c panicked "$dir/server.err" || true)
echo "schemathesis ($backend): exit $status, server panics: $panics"
[ "$status" -eq 0 ] && [ "$panics" -eq 0 ]
SH
chmod +x "$work/one.sh"

failed=0
for backend in sqlite postgres; do
  echo "== schemathesis on $backend"
  if [ "$backend" = postgres ]; then
    db=pilot_st_$$
    psql "postgres://postgres@/postgres?host=$pg_socket" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    export PILOT_ST_PG_URL="postgres://postgres@/$db?host=$pg_socket"
  fi
  if ! unshare -n "$work/one.sh" "$backend" "$server_bin" "$venv" "$max_examples" "$max_time" "$work"; then
    failed=1
  fi
  if [ "$backend" = postgres ]; then
    psql "postgres://postgres@/postgres?host=$pg_socket" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  fi
done
exit $failed
