# Development: in-memory storage, plain HTTP on loopback. Prefer `coffer server --dev`,
# which also initializes, unseals and mounts KV v2 at secret/.
storage "inmem" {}

# Plain HTTP API (tls_disable below) outside --dev must be asked for explicitly.
allow_plaintext_api = true

listener "tcp" {
  address     = "127.0.0.1:8200"
  tls_disable = true
  telemetry {
    unauthenticated_metrics_access = true
  }
}

cluster_name = "coffer-dev"
log_level    = "debug"
