# Custos signing service. SoftHSM2 is installed for development tokens; a real
# HSM's PKCS#11 library is mounted and named in the config instead.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/custos --create-home custos

WORKDIR /opt/custos
COPY pyproject.toml README.md ./
COPY signer ./signer
COPY proto ./proto
COPY hsm ./hsm
COPY policies ./policies
COPY audit ./audit
RUN pip install --no-cache-dir .

USER custos
# /etc/custos: custos.toml, TLS files, PIN file. /var/lib/custos: tokens and the SQLite store.
VOLUME ["/etc/custos", "/var/lib/custos"]
EXPOSE 50051
ENTRYPOINT ["custos"]
CMD ["serve", "--config", "/etc/custos/custos.toml"]
