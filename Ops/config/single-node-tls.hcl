# One production node: SQLite storage, TLS listener. Make a local certificate pair with
# `Ops/tls-selfsigned /etc/coffer/tls` (or use your CA's), then:
#   coffer server --config /etc/coffer/coffer.hcl
storage "sqlite" {
  path = "/var/lib/coffer/coffer.db"
}

listener "tcp" {
  address       = "0.0.0.0:8200"
  tls_cert_file = "/etc/coffer/tls/server.pem"
  tls_key_file  = "/etc/coffer/tls/server-key.pem"
}

api_addr          = "https://coffer.example.internal:8200"
cluster_name      = "coffer-eu-1"
default_lease_ttl = "768h"
max_lease_ttl     = "768h"
log_level         = "info"
log_format        = "json"
disable_mlock     = true
