#!/bin/sh
# Container entrypoint for Custos.
#   entrypoint.sh                 -> migrate the store, then serve (the default)
#   entrypoint.sh serve [ARGS]    -> the same, with extra `custos serve` arguments
#   entrypoint.sh COMMAND ...     -> any other custos command (keys, audit, policy, ...)
# Environment:
#   CUSTOS_CONFIG    config file (default /etc/custos/custos.toml)
#   CUSTOS_HSM_PIN   or hsm.pin_file in the config: the HSM user PIN (never logged)
set -eu

config="${CUSTOS_CONFIG:-/etc/custos/custos.toml}"
custos="${CUSTOS_BIN:-custos}"

if [ "$#" -eq 0 ]; then
    set -- serve
fi

if [ "$1" != "serve" ]; then
    exec "$custos" "$@"
fi
shift

if [ ! -r "$config" ]; then
    echo "entrypoint: config $config not found or not readable (mount it, or set CUSTOS_CONFIG)" >&2
    exit 64
fi
if [ "$(id -u)" = "0" ]; then
    echo "entrypoint: refusing to run as root; the image runs as user custos" >&2
    exit 77
fi

# Replicas may start together: migrations take a database lock and are idempotent.
"$custos" db upgrade --config "$config"
exec "$custos" serve --config "$config" "$@"
