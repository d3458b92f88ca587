# A private RabbitMQ broker for the bridge tests and benchmark (sourced, not run).
#
# broker_start DIR: starts rabbitmq-server (Debian's) on 127.0.0.1 with a node name, ports,
# an epmd and data of its own under DIR (made the rabbitmq user's when run as root: the
# server runs as that user), and waits until `rabbitmqctl status` answers. Sets BROKER_PORT,
# BROKER_NODE, BROKER_URL. broker_stop stops the server, broker_restart stops and starts it
# on the same ports and data, broker_crash_restart SIGKILLs its VM and starts it again,
# broker_cleanup (for trap EXIT) stops it and the epmd it
# started, by pid. Nothing here touches a system broker, /var/lib/rabbitmq or port 5672.

BROKER_BIN=${BROKER_BIN:-/usr/lib/rabbitmq/bin}
broker_pid=""
broker_epmd_pid=""

broker_available() { [ -x "$BROKER_BIN/rabbitmq-server" ] && command -v epmd >/dev/null; }

# A TCP port nobody listens on now, from a range away from the well-known ones.
broker_free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 30000))
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2; return 1
}

# Runs a command as the broker's user (rabbitmq when we are root), with the broker's env.
# exec: started in the background (`broker_as ... &`), $! is then the command's own pid, not
# a subshell's, so a signal to it reaches the command.
broker_as() {
  if [ "$(id -u)" -eq 0 ]; then
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME="$BROKER_DIR" "$@"
  else
    exec env HOME="$BROKER_DIR" "$@"
  fi
}

broker_env() {
  export RABBITMQ_NODENAME="$BROKER_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$BROKER_PORT" RABBITMQ_DIST_PORT="$BROKER_DIST_PORT"
  export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$BROKER_EPMD_PORT"
  export RABBITMQ_MNESIA_BASE="$BROKER_DIR/mnesia" RABBITMQ_LOG_BASE="$BROKER_DIR/log"
  export RABBITMQ_FEATURE_FLAGS_FILE="$BROKER_DIR/feature_flags"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$BROKER_DIR/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$BROKER_DIR/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$BROKER_DIR/advanced.config"
  export RABBITMQ_PID_FILE="$BROKER_DIR/rabbitmq.pid"
  export RABBITMQ_CONF_ENV_FILE="$BROKER_DIR/rabbitmq-env.conf"
  export RABBITMQ_LOGS="$BROKER_DIR/log/broker.log"
}

broker_start() {
  BROKER_DIR=$1
  mkdir -p "$BROKER_DIR/mnesia" "$BROKER_DIR/log"
  if [ -z "${BROKER_PORT:-}" ]; then
    BROKER_PORT=$(broker_free_port); BROKER_DIST_PORT=$(broker_free_port)
    BROKER_EPMD_PORT=$(broker_free_port)
    BROKER_NODE="shmqtest-$$@localhost"
    echo '[].' > "$BROKER_DIR/enabled_plugins"
    echo '[].' > "$BROKER_DIR/advanced.config"
    : > "$BROKER_DIR/rabbitmq-env.conf"
    cat > "$BROKER_DIR/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$BROKER_PORT
loopback_users = none
disk_free_limit.absolute = 10MB
vm_memory_high_watermark.relative = 0.6
log.console = false
log.file.level = warning
CONF
    # The Erlang cookie the server and rabbitmqctl share: in HOME, owner-only.
    head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$BROKER_DIR/.erlang.cookie"
    chmod 0400 "$BROKER_DIR/.erlang.cookie"
    if [ "$(id -u)" -eq 0 ]; then chown -R rabbitmq:rabbitmq "$BROKER_DIR"; fi
    BROKER_URL="amqp://guest:guest@127.0.0.1:$BROKER_PORT"  # no path: vhost "/"
    broker_env
    # Our own epmd, on our port, in the foreground of its background job: we know its pid.
    broker_as epmd -address 127.0.0.1 -port "$BROKER_EPMD_PORT" >"$BROKER_DIR/log/epmd.out" 2>&1 &
    broker_epmd_pid=$!
  fi
  broker_env
  broker_as "$BROKER_BIN/rabbitmq-server" >>"$BROKER_DIR/log/server.out" 2>&1 &
  broker_pid=$!
  broker_wait_up 90
}

# Waits (bounded) until the node answers and its AMQP listener is up.
broker_wait_up() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      echo "broker: rabbitmq-server exited during start" >&2; broker_tail; return 1
    fi
    if (broker_as "$BROKER_BIN/rabbitmqctl" -n "$BROKER_NODE" -q await_startup -t 5 >/dev/null 2>&1) &&
       ss -Hltn "sport = :$BROKER_PORT" | grep -q .; then
      return 0
    fi
    sleep 0.2  # polling interval of the bounded wait, not synchronisation
  done
  echo "broker: not up within $1 s" >&2; broker_tail; return 1
}

broker_ctl() { (broker_as "$BROKER_BIN/rabbitmqctl" -n "$BROKER_NODE" -q "$@"); }

broker_stop() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$broker_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$broker_pid" 2>/dev/null; then
      echo "broker: did not stop in 60 s; killing it" >&2
      kill -KILL "$broker_pid" 2>/dev/null || true
    fi
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
  fi
}

broker_restart() { broker_stop; broker_start "$BROKER_DIR"; }

# Kills the broker's Erlang VM with SIGKILL (a crash: nothing flushed, nothing closed
# politely), then starts it again on the same data. The VM is the wrapper's one child.
broker_crash_restart() {
  local vm
  vm=$(pgrep -P "$broker_pid" -x beam.smp) || { echo "broker: no beam.smp under pid $broker_pid" >&2; return 1; }
  kill -KILL "$vm"
  broker_stop  # the wrapper exits once its child is gone
  broker_start "$BROKER_DIR"
}

broker_cleanup() {
  broker_stop
  if [ -n "$broker_epmd_pid" ]; then
    # epmd ignores SIGTERM; it keeps no state worth a clean stop.
    kill -KILL "$broker_epmd_pid" 2>/dev/null || true
    wait "$broker_epmd_pid" 2>/dev/null || true
    broker_epmd_pid=""
  fi
}

broker_tail() {
  echo "--- broker logs (tail) ---" >&2
  tail -n 30 "$BROKER_DIR"/log/*.log "$BROKER_DIR/log/server.out" 2>/dev/null >&2 || true
}
