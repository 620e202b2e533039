# Custos signing service. SoftHSM2 is installed for development tokens; for a
# real HSM, mount its PKCS#11 library and name it in the config (hsm.library).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/custos --create-home custos \
    && mkdir -p /etc/custos /var/lib/custos/tokens \
    && chown -R custos:custos /etc/custos /var/lib/custos

ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/custos

# Dependencies first, in their own layer: rebuilt only when the lock changes, not on
# every source change. Exact versions with their hashes (`make lock`), wheels only,
# so nothing is compiled or resolved at build time.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock

# Custos itself: no dependencies (all above) and no build isolation (setuptools,
# the build backend, is pinned in the lock as well), so nothing unpinned is fetched.
COPY pyproject.toml README.md ./
# custos/ holds symlinks to the folders below: the package is custos.<folder>.
COPY custos ./custos
COPY common ./common
COPY signer ./signer
COPY proto ./proto
COPY hsm ./hsm
COPY policies ./policies
COPY audit ./audit
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check
COPY docker/entrypoint.sh /usr/local/bin/custos-entrypoint
COPY docker/healthcheck.py /usr/local/bin/custos-healthcheck

USER custos
# /etc/custos: custos.toml, TLS files, PIN file, policy. /var/lib/custos: SoftHSM
# token directory (SOFTHSM2_CONF in [hsm.environment]) and, with SQLite, the store.
# `docker run ... custos dev-init` fills both with a development set-up (README).
VOLUME ["/etc/custos", "/var/lib/custos"]
# gRPC (mTLS) and the metrics port: /metrics, /healthz, /readyz (no client certificate).
EXPOSE 50051 9464
# Ready = HSM, store and the other health components pass ([metrics] listen must be
# 0.0.0.0:9464 or set CUSTOS_HEALTHCHECK_URL). No curl in slim images: Python's urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/custos-healthcheck"]
ENTRYPOINT ["custos-entrypoint"]
