# Custos signing service. SoftHSM2 is installed for development tokens; for a
# real HSM, mount its PKCS#11 library and name it in the config (hsm.library).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/custos --create-home custos \
    && mkdir -p /etc/custos /var/lib/custos/tokens \
    && chown -R custos:custos /var/lib/custos

WORKDIR /opt/custos
COPY pyproject.toml README.md ./
COPY signer ./signer
COPY proto ./proto
COPY hsm ./hsm
COPY policies ./policies
COPY audit ./audit
RUN pip install --no-cache-dir . \
    && install -m 0755 /dev/null /usr/local/bin/custos-entrypoint
COPY docker/entrypoint.sh /usr/local/bin/custos-entrypoint

USER custos
# /etc/custos: custos.toml, TLS files, PIN file, policy. /var/lib/custos: SoftHSM
# token directory (SOFTHSM2_CONF in [hsm.environment]) and, with SQLite, the store.
VOLUME ["/etc/custos", "/var/lib/custos"]
EXPOSE 50051 9464
ENTRYPOINT ["custos-entrypoint"]
