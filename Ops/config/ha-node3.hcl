# HA cluster on etcd, node 3 of 3 — all three nodes on one host for a trial run
# (ha-node1.hcl, ha-node2.hcl, ha-node3.hcl: API ports 8200, 8210, 8220; cluster ports
# 8201, 8211, 8221). On separate hosts every node would use 8200/8201 and its own address.
#   coffer server --config Ops/config/ha-node3.hcl
# Initialize once through any node (coffer operator init), then unseal EVERY node with the
# same keys (coffer operator unseal). One node becomes active; the others are standbys:
# they answer reads and forward writes to the active node over the cluster listener.
# Runbook: Ops/runbooks/ha.md.

storage "etcd" {
  # Client URLs of every etcd member, comma-separated (https://host:port for TLS, with the
  # tls_* keys below).
  address         = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
  # Key prefix: the same on every node of this cluster; another Coffer cluster sharing the
  # etcd needs its own.
  path            = "/coffer/"
  ha_enabled      = "true"
  # Lease TTL of the HA lock: a killed active node is replaced within about this long plus
  # one poll (default 3s: fail-over < 5 s). 2s..300s.
  lock_timeout    = "3s"
  # Longest wait for etcd per request; an etcd outage answers 503 after this.
  request_timeout = "5s"
  # username = "coffer"    # etcd auth (or ETCD_USERNAME / ETCD_PASSWORD)
  # password = "..."
  # tls_ca_file   = "/etc/coffer/etcd-ca.pem"      # TLS to etcd: the CA of the members' certificates
  # tls_cert_file = "/etc/coffer/etcd-client.pem"  # client certificate (etcd --client-cert-auth)
  # tls_key_file  = "/etc/coffer/etcd-client-key.pem"
}

# Plain HTTP API (tls_disable below) outside --dev must be asked for explicitly.
allow_plaintext_api = true

listener "tcp" {
  address         = "127.0.0.1:8220"
  # Node-to-node listener (mutual TLS with certificates from a cluster CA that Coffer creates
  # and keeps in storage; default: the API port + 1). Standbys forward writes here.
  cluster_address = "127.0.0.1:8221"
  tls_disable     = true   # plain HTTP API: trial runs only; use tls_cert_file/tls_key_file
}

# What the other nodes and the clients are told: this node's API and cluster addresses.
api_addr      = "http://127.0.0.1:8220"
cluster_addr  = "https://127.0.0.1:8221"
cluster_name  = "coffer-ha"
disable_mlock = true
