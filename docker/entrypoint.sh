#!/bin/sh
# Container entrypoint for Custos.
#   entrypoint.sh                 -> migrate the store, then serve (the default)
#   entrypoint.sh serve [ARGS]    -> the same, with extra `custos serve` arguments
#   entrypoint.sh dev-init        -> a development environment inside the volumes (below)
#   entrypoint.sh COMMAND ...     -> any other custos command (keys, audit, policy, ...)
# Environment:
#   CUSTOS_CONFIG    config file (default /etc/custos/custos.toml)
#   CUSTOS_DATA      data volume (default /var/lib/custos): dev-init's token, PKI and store
#   CUSTOS_HSM_PIN   or hsm.pin_file in the config: the HSM user PIN (never logged)
set -eu

config="${CUSTOS_CONFIG:-/etc/custos/custos.toml}"
data="${CUSTOS_DATA:-/var/lib/custos}"
custos="${CUSTOS_BIN:-custos}"

if [ "$#" -eq 0 ]; then
    set -- serve
fi

refuse_root() {
    if [ "$(id -u)" = "0" ]; then
        echo "entrypoint: refusing to run as root; the image runs as user custos" >&2
        exit 77
    fi
}

if [ "$1" = "dev-init" ]; then
    # `custos init` in $data/dev (SoftHSM token and its softhsm2.conf, PINs in 0600
    # files, CA and certificates, client profiles, policy, SQLite store), then the
    # config at $config with every path inside the container, gRPC on 0.0.0.0:50051
    # and metrics/health on 0.0.0.0:9464 (the image's EXPOSEd ports). Development only.
    refuse_root
    if [ -e "$config" ]; then
        echo "entrypoint: $config exists; dev-init never overwrites a config (remove it first)" >&2
        exit 73
    fi
    dev="$data/dev"
    "$custos" init --dir "$dev" --listen 0.0.0.0:50051 >/dev/null
    # The server certificate names localhost: clients in the container's network use it.
    for profile in "$dev"/clients/*.toml; do
        sed -i 's|^endpoint = .*|endpoint = "localhost:50051"|' "$profile"
    done
    mkdir -p "$(dirname "$config")"
    sed '/^\[metrics\]/,/^\[/ s|^listen = .*|listen = "0.0.0.0:9464"|' "$dev/custos.toml" \
        > "$config.tmp"
    mv "$config.tmp" "$config"
    rm "$dev/custos.toml"  # one config: the one the entrypoint serves
    echo "dev-init: config $config; token, PKI and store in $dev/"
    echo "dev-init: client profiles (CUSTOS_CLIENT):"
    for profile in "$dev"/clients/*.toml; do echo "  $profile"; done
    exit 0
fi

if [ "$1" != "serve" ]; then
    exec "$custos" "$@"
fi
shift

if [ ! -r "$config" ]; then
    echo "entrypoint: config $config not found or not readable (mount it, or set CUSTOS_CONFIG)" >&2
    exit 64
fi
refuse_root

# Replicas may start together: migrations take a database lock and are idempotent.
"$custos" db upgrade --config "$config"
exec "$custos" serve --config "$config" "$@"
