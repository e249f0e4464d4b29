#!/usr/bin/env bash
# Throwaway PostgreSQL + Redis servers for the test suite.
#
# Usage:
#   scripts/services.sh install              # apt-get install postgresql, redis-server, chromium if missing
#   scripts/services.sh start DIR            # start servers on 127.0.0.1, all state under DIR, write DIR/env
#   scripts/services.sh stop DIR             # stop both servers (tolerant) and remove DIR
#   scripts/services.sh restart-pg DIR       # stop + start PostgreSQL (same port, same data)
#   scripts/services.sh restart-redis DIR    # stop + start Redis (same port; no persistence, so data is lost)
#   scripts/services.sh stop-pg|start-pg|stop-redis|start-redis DIR
#                                            # finer control for fault tests (server down for a while)
#   scripts/services.sh status DIR           # exit 0 if both servers answer
#
# After `start`, `. DIR/env` exports DATABASE_URL, CELERY_BROKER_URL, CACHE_URL,
# REDIS_URL, PG_BIN, PGPORT, REDIS_PORT, CHROMIUM_PATH, PG_DATA, REDIS_CONF, ...
#
# PostgreSQL refuses to run as root: when this script runs as root the cluster
# is owned by and run as the unprivileged `postgres` system user (created if
# missing); otherwise it runs as the current user.
set -euo pipefail

PROG=${0##*/}
MARKER=.batchhub-services   # marks a DIR this script created (safe to rm -rf)
PG_PORT_BASE=55432
REDIS_PORT_BASE=56379
START_TIMEOUT=${SERVICES_START_TIMEOUT:-60}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# --------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------

find_pg_bin() {
    local d v best="" bestv=0
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/postgres" ]; then
        printf '%s\n' "$PG_BIN"
        return 0
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/postgres" ] || continue
        v=${d#/usr/lib/postgresql/}
        v=${v%%/*}
        v=${v%%.*}
        if [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 15 ] && [ "$v" -gt "$bestv" ]; then
            best=$d
            bestv=$v
        fi
    done
    if [ -z "$best" ] && command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        [ -n "$d" ] && [ -x "$d/postgres" ] && best=$d
    fi
    [ -n "$best" ] || return 1
    printf '%s\n' "$best"
}

find_chromium() {
    local c
    for c in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$c" >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

cmd_install() {
    local -a missing=()
    find_pg_bin >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 \
        || missing+=(redis-server)
    # --no-install-recommends below skips chromium's heavy recommends; keep
    # its fonts so screenshots render text.
    find_chromium >/dev/null || missing+=(chromium fonts-liberation fonts-dejavu-core)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "install: postgresql, redis-server and chromium already present"
        return 0
    fi
    log "install: installing ${missing[*]}"

    local -a sudo=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${missing[*]} by hand"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"

    # Keep the packages' postinst scripts from starting system-wide services
    # (a postgres cluster on 5432, redis on 6379): tests start their own.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || rc=$?
    [ -n "$added_policy" ] && "${sudo[@]}" rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get failed (exit $rc)"

    find_pg_bin >/dev/null || die "postgresql installed but no PostgreSQL >= 15 server binary found"
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after install"
    find_chromium >/dev/null || die "chromium still missing after install"
}

# --------------------------------------------------------------------------
# helpers for start/stop
# --------------------------------------------------------------------------

abs_dir() {
    # Absolute, normalised path of $1 without requiring it to exist.
    realpath -m -- "$1"
}

# Run a command as the user that owns the PostgreSQL cluster.
as_pg() {
    if [ "$PG_USER" = "$(id -un)" ]; then
        (cd / && "$@")
    else
        (cd / && runuser -u "$PG_USER" -- "$@")
    fi
}

port_in_use() {
    # Something accepts connections on 127.0.0.1:$1?
    # shellcheck disable=SC2016  # $0 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

port_taken_by_ss() {
    command -v ss >/dev/null 2>&1 || return 1
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

free_port() {
    # First port >= $1 that nothing listens on and that is not $2.
    local p=$1 avoid=${2:-} last=$(( $1 + 2000 ))
    while [ "$p" -lt "$last" ]; do
        if [ "$p" != "$avoid" ] && ! port_in_use "$p" && ! port_taken_by_ss "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
        p=$(( p + 1 ))
    done
    die "no free port in $1..$last"
}

ensure_pg_user() {
    if ! is_root; then
        PG_USER=$(id -un)
        return 0
    fi
    PG_USER=postgres
    if ! id -u postgres >/dev/null 2>&1; then
        log "creating system user postgres"
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/postgresql --shell /bin/sh postgres
    fi
}

# Can $PG_USER reach $1, i.e. traverse it and all its parents? Files it must
# write there are created by this script and chowned to $PG_USER.
pg_user_can_reach() {
    as_pg test -x "$1" 2>/dev/null
}

LOGS_SHOWN=" "
show_log() {
    local f=$1 name=$2
    LOGS_SHOWN="$LOGS_SHOWN$name "
    if [ -f "$f" ]; then
        log "---- last lines of $name log ($f) ----"
        tail -n 60 "$f" >&2 || true
        log "---- end of $name log ----"
    else
        log "($name log $f does not exist)"
    fi
}

load_state() {
    # Sets SVC_DIR and sources SVC_DIR/state; returns 1 if there is none.
    SVC_DIR=$(abs_dir "$1")
    [ -f "$SVC_DIR/state" ] || return 1
    # shellcheck disable=SC1091
    . "$SVC_DIR/state"
}

require_state() {
    load_state "$1" || die "no services recorded in $SVC_DIR (run '$PROG start $1' first)"
}

write_state() {
    {
        printf 'PG_USER=%q\n' "$PG_USER"
        printf 'PG_BIN=%q\n' "$PG_BIN"
        printf 'PG_BASE=%q\n' "$PG_BASE"
        printf 'PG_BASE_IS_TMP=%q\n' "$PG_BASE_IS_TMP"
        printf 'PG_DATA=%q\n' "$PG_DATA"
        printf 'PG_SOCKET_DIR=%q\n' "$PG_SOCKET_DIR"
        printf 'PG_LOG=%q\n' "$PG_LOG"
        printf 'PGPORT=%q\n' "$PGPORT"
        printf 'REDIS_PORT=%q\n' "$REDIS_PORT"
        printf 'REDIS_CONF=%q\n' "$REDIS_CONF"
        printf 'REDIS_PIDFILE=%q\n' "$REDIS_PIDFILE"
        printf 'REDIS_LOG=%q\n' "$REDIS_LOG"
    } >"$SVC_DIR/state.tmp"
    mv "$SVC_DIR/state.tmp" "$SVC_DIR/state"
}

wait_pg() {
    local deadline=$(( SECONDS + START_TIMEOUT ))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -d postgres -t 2 >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log "$PG_LOG" PostgreSQL
            die "PostgreSQL did not accept connections on 127.0.0.1:$PGPORT within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

wait_redis() {
    local deadline=$(( SECONDS + START_TIMEOUT ))
    until [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log "$REDIS_LOG" Redis
            die "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

pg_running() {
    [ -f "$PG_DATA/postmaster.pid" ] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

start_pg() {
    if pg_running; then
        log "PostgreSQL already running on port $PGPORT"
    else
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" -s start; then
            show_log "$PG_LOG" PostgreSQL
            die "PostgreSQL failed to start (data dir $PG_DATA)"
        fi
    fi
    wait_pg
}

stop_pg() {
    [ -n "${PG_DATA:-}" ] && [ -d "$PG_DATA" ] || return 0
    [ -f "$PG_DATA/postmaster.pid" ] || return 0
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop >/dev/null 2>&1; then
        if pg_running; then
            log "PostgreSQL fast shutdown failed; trying immediate"
            as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 -s stop >/dev/null 2>&1 || true
        fi
    fi
    if pg_running; then
        log "warning: PostgreSQL in $PG_DATA is still running"
        return 1
    fi
}

proc_alive() {
    # Running (not a zombie waiting to be reaped) process $1?
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [ "$state" != Z ]
}

redis_pid() {
    # PID from the pidfile if that process is alive and is a redis-server.
    local pid
    [ -n "${REDIS_PIDFILE:-}" ] && [ -f "$REDIS_PIDFILE" ] || return 1
    pid=$(tr -dc '0-9' <"$REDIS_PIDFILE")
    [ -n "$pid" ] && proc_alive "$pid" || return 1
    grep -q redis "/proc/$pid/comm" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

start_redis() {
    if redis_pid >/dev/null; then
        log "Redis already running on port $REDIS_PORT"
    else
        rm -f "$REDIS_PIDFILE"
        if ! redis-server "$REDIS_CONF" >>"$REDIS_LOG" 2>&1; then
            show_log "$REDIS_LOG" Redis
            die "redis-server failed to start"
        fi
    fi
    wait_redis
}

stop_redis() {
    local pid i
    [ -n "${REDIS_PORT:-}" ] || return 0
    pid=$(redis_pid) || pid=""
    if [ -z "$pid" ]; then
        rm -f "${REDIS_PIDFILE:-/nonexistent}"
        return 0
    fi
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    for i in $(seq 1 100); do
        proc_alive "$pid" || break
        [ "$i" -eq 50 ] && kill -TERM "$pid" 2>/dev/null
        sleep 0.1
    done
    if proc_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$REDIS_PIDFILE"
}

write_env() {
    local chromium
    chromium=$(find_chromium) || chromium=""
    {
        printf '# Written by scripts/services.sh start; source it: . %q\n' "$SVC_DIR/env"
        printf 'export %s=%q\n' \
            DATABASE_URL "postgres://batchhub:batchhub@127.0.0.1:$PGPORT/batchhub" \
            CELERY_BROKER_URL "redis://127.0.0.1:$REDIS_PORT/0" \
            CACHE_URL "redis://127.0.0.1:$REDIS_PORT/1" \
            REDIS_URL "redis://127.0.0.1:$REDIS_PORT/2" \
            PG_BIN "$PG_BIN" \
            PGPORT "$PGPORT" \
            REDIS_PORT "$REDIS_PORT" \
            CHROMIUM_PATH "$chromium" \
            SERVICES_DIR "$SVC_DIR" \
            SERVICES_SCRIPT "$SCRIPT_PATH" \
            PG_DATA "$PG_DATA" \
            PG_LOG "$PG_LOG" \
            PG_SOCKET_DIR "$PG_SOCKET_DIR" \
            PG_USER "$PG_USER" \
            REDIS_CONF "$REDIS_CONF" \
            REDIS_CONF_ARGS "$REDIS_CONF" \
            REDIS_PIDFILE "$REDIS_PIDFILE" \
            REDIS_LOG "$REDIS_LOG"
    } >"$SVC_DIR/env.tmp"
    mv "$SVC_DIR/env.tmp" "$SVC_DIR/env"
}

remove_dir() {
    # Remove SVC_DIR and any out-of-tree PostgreSQL base it recorded.
    if [ "${PG_BASE_IS_TMP:-}" = 1 ] && [ -n "${PG_BASE:-}" ] && [ -d "$PG_BASE" ]; then
        case "$PG_BASE" in
            /tmp/batchhub-pg.*) rm -rf -- "$PG_BASE" ;;
            *) log "warning: not removing unexpected PG base $PG_BASE" ;;
        esac
    fi
    if [ -d "$SVC_DIR" ]; then
        rm -rf -- "$SVC_DIR"
    fi
}

check_dir_is_ours() {
    # Refuse to delete a directory this script did not create.
    [ "$SVC_DIR" != / ] || die "refusing to use / as services dir"
    if [ -d "$SVC_DIR" ] && [ ! -e "$SVC_DIR/$MARKER" ] && [ -n "$(ls -A "$SVC_DIR" 2>/dev/null)" ]; then
        die "$SVC_DIR exists, is not empty and was not created by $PROG; refusing to touch it"
    fi
}

# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------

cmd_stop() {
    SVC_DIR=$(abs_dir "$1")
    [ -d "$SVC_DIR" ] || return 0
    check_dir_is_ours
    if load_state "$1"; then
        stop_redis || true
        stop_pg || log "warning: could not stop PostgreSQL cleanly"
    fi
    remove_dir
}

START_OK=""
on_start_exit() {
    local rc=$?
    [ -n "$START_OK" ] && return 0
    log "start failed (exit $rc); cleaning up $SVC_DIR"
    if [ -n "${PG_LOG:-}" ] && [ -s "$PG_LOG" ] && [[ "$LOGS_SHOWN" != *" PostgreSQL "* ]]; then
        show_log "$PG_LOG" PostgreSQL
    fi
    if [ -n "${REDIS_LOG:-}" ] && [ -s "$REDIS_LOG" ] && [[ "$LOGS_SHOWN" != *" Redis "* ]]; then
        show_log "$REDIS_LOG" Redis
    fi
    if [ -f "$SVC_DIR/state" ]; then
        (cmd_stop "$SVC_DIR") || true
    fi
    exit "$rc"
}

cmd_start() {
    local dir=$1
    PG_BIN=$(find_pg_bin) || die "no PostgreSQL >= 15 server found; run '$PROG install'"
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found; run '$PROG install'"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found; run '$PROG install'"

    SVC_DIR=$(abs_dir "$dir")
    # A stale DIR from a killed run: stop whatever it recorded, then wipe it.
    if [ -d "$SVC_DIR" ]; then
        check_dir_is_ours
        log "stopping leftovers recorded in $SVC_DIR"
        (cmd_stop "$SVC_DIR")
    fi
    mkdir -p "$SVC_DIR"
    : >"$SVC_DIR/$MARKER"
    PG_BASE="" PG_BASE_IS_TMP=0 PG_LOG="" REDIS_LOG=""
    trap on_start_exit EXIT

    ensure_pg_user
    # Choose where PostgreSQL's files live: DIR itself if the postgres user can
    # reach it and the socket path fits the 107-byte limit, else a /tmp dir.
    chmod 755 "$SVC_DIR"
    if pg_user_can_reach "$SVC_DIR"; then
        PG_BASE=$SVC_DIR
    fi
    if [ -n "$PG_BASE" ] && [ "${#PG_BASE}" -gt 80 ]; then
        PG_BASE=""
    fi
    if [ -z "$PG_BASE" ]; then
        PG_BASE=$(mktemp -d /tmp/batchhub-pg.XXXXXXXX)
        PG_BASE_IS_TMP=1
        chmod 755 "$PG_BASE"
        log "PostgreSQL files go to $PG_BASE ($SVC_DIR is not reachable by $PG_USER, or too long for a socket path)"
    fi
    PG_DATA=$PG_BASE/pg
    PG_SOCKET_DIR=$PG_BASE/pg-sock
    PG_LOG=$PG_BASE/postgres.log
    REDIS_CONF=$SVC_DIR/redis.conf
    REDIS_PIDFILE=$SVC_DIR/redis.pid
    REDIS_LOG=$SVC_DIR/redis.log
    PGPORT=$(free_port "$PG_PORT_BASE")
    REDIS_PORT=$(free_port "$REDIS_PORT_BASE" "$PGPORT")
    write_state   # from here on, `stop DIR` can clean up even a half-started run

    mkdir -p "$PG_DATA" "$PG_SOCKET_DIR" "$SVC_DIR/redis-data"
    : >"$PG_LOG"
    chmod 700 "$PG_DATA"
    chmod 755 "$PG_SOCKET_DIR"
    if is_root && [ "$PG_USER" != root ]; then
        chown "$PG_USER": "$PG_DATA" "$PG_SOCKET_DIR" "$PG_LOG"
        [ "$PG_BASE_IS_TMP" = 1 ] && chown "$PG_USER": "$PG_BASE"
    fi

    log "initdb $PG_DATA (PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), user $PG_USER)"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$PG_BASE/initdb.log" 2>&1 \
        || { cat "$PG_BASE/initdb.log" >&2; die "initdb failed"; }
    as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<EOF

# ---- throwaway test server (scripts/services.sh) ----
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    start_pg
    log "creating role and database batchhub"
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PGPORT" -U postgres -d postgres \
        -c "CREATE ROLE batchhub LOGIN SUPERUSER CREATEDB PASSWORD 'batchhub'" \
        -c "CREATE DATABASE batchhub OWNER batchhub" >/dev/null

    cat >"$REDIS_CONF" <<EOF
# throwaway test server (scripts/services.sh)
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $REDIS_PIDFILE
logfile $REDIS_LOG
dir $SVC_DIR/redis-data
save ""
appendonly no
databases 16
EOF
    start_redis
    write_env
    START_OK=1
    trap - EXIT
    log "PostgreSQL on 127.0.0.1:$PGPORT, Redis on 127.0.0.1:$REDIS_PORT; . $SVC_DIR/env"
}

cmd_status() {
    require_state "$1"
    local ok=0
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -t 2; then
        echo "postgresql: up (127.0.0.1:$PGPORT)"
    else
        echo "postgresql: down (127.0.0.1:$PGPORT)"; ok=1
    fi
    if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
        echo "redis: up (127.0.0.1:$REDIS_PORT)"
    else
        echo "redis: down (127.0.0.1:$REDIS_PORT)"; ok=1
    fi
    return "$ok"
}

SCRIPT_PATH=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    install)
        [ $# -eq 0 ] || usage
        cmd_install ;;
    start|stop|restart-pg|restart-redis|stop-pg|start-pg|stop-redis|start-redis|status)
        [ $# -eq 1 ] || usage
        case "$cmd" in
            start) cmd_start "$1" ;;
            stop) cmd_stop "$1" ;;
            status) cmd_status "$1" ;;
            restart-pg) require_state "$1"; stop_pg; start_pg ;;
            restart-redis) require_state "$1"; stop_redis; start_redis ;;
            stop-pg) require_state "$1"; stop_pg ;;
            start-pg) require_state "$1"; start_pg ;;
            stop-redis) require_state "$1"; stop_redis ;;
            start-redis) require_state "$1"; start_redis ;;
        esac ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
