"""Schema versions of the PostgreSQL store, applied in order by PostgresStore.migrate().

A version is never edited once released: a change to the schema is a new
entry at the end of POSTGRES. Statements use unqualified names and run with
search_path set to the store's schema; all pending versions are applied in
one transaction (PostgreSQL DDL is transactional), so a failed upgrade leaves
the previous version intact. SQLite keeps its in-place migration
(signer.store.sqlite._migrate, adding ADDED_COLUMNS): one file, one process, no race.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from custos.signer.store.base import StoreError


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, a name for people, and its SQL."""

    version: int
    name: str
    sql: str


_INITIAL = r"""
CREATE TABLE keys (
    key_id TEXT PRIMARY KEY,
    public_key BYTEA NOT NULL,
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE batches (
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    payload_digest BYTEA NOT NULL,
    done BOOLEAN NOT NULL DEFAULT FALSE,
    lease_until_ms BIGINT NOT NULL,
    result BYTEA,
    approval_id TEXT,
    PRIMARY KEY (caller, request_id)
);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY CHECK (seq >= 0),
    record BYTEA NOT NULL,
    hash BYTEA NOT NULL
);

-- The last record of the log, in one row. Every append locks it FOR UPDATE
-- before reading it, so appends from all replicas take turns and the log
-- keeps one gapless sequence.
CREATE TABLE audit_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    seq BIGINT NOT NULL,  -- -1 while the log is empty
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (-1, ''::bytea);

-- Append-only in the database too: the hash chain detects tampering, this
-- stops an accidental UPDATE or DELETE by an operator's script.
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    root BYTEA NOT NULL,
    note TEXT NOT NULL
);

CREATE TABLE policy_versions (
    version INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    document_yaml TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,  -- JSON text, kept byte for byte as written
    activated_at_ms BIGINT
);

CREATE TABLE reservations (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket TEXT NOT NULL,
    amount NUMERIC NOT NULL,  -- uint256 amounts and their sums do not fit BIGINT
    count BIGINT NOT NULL,
    reserved_at_ms BIGINT NOT NULL,
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    released BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX reservations_bucket ON reservations (bucket, reserved_at_ms) WHERE NOT released;
CREATE INDEX reservations_request ON reservations (caller, request_id);

CREATE TABLE pending (
    approval_id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    record TEXT NOT NULL,
    request BYTEA NOT NULL
);
CREATE INDEX pending_state ON pending (state, expires_at_ms);

CREATE TABLE totp (
    subject TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL,
    state TEXT NOT NULL
);
"""

# Fenced claims: each claim stores a random token that completing or releasing
# it must present. Rows from before hold none: their attempts are gone (a
# restart), so their leases run out and a retry takes them over.
_CLAIM_TOKENS = "ALTER TABLE batches ADD COLUMN claim_token BYTEA;"

# State authenticators (signer.usecases.authenticity): a version counter and the HSM tag
# of each key record, policy version, pending batch and TOTP row. The migration
# cannot compute tags (they need the HSM): rows from before hold none and are
# refused until an operator runs `custos integrity seal` once.
_STATE_MACS = """
ALTER TABLE keys ADD COLUMN version BIGINT NOT NULL DEFAULT 1, ADD COLUMN mac BYTEA;
ALTER TABLE policy_versions ADD COLUMN rev BIGINT NOT NULL DEFAULT 1, ADD COLUMN mac BYTEA;
ALTER TABLE pending ADD COLUMN rev BIGINT NOT NULL DEFAULT 1, ADD COLUMN mac BYTEA;
ALTER TABLE totp ADD COLUMN rev BIGINT NOT NULL DEFAULT 1, ADD COLUMN mac BYTEA;
"""

# Keys belong to one network class (signer/chains/networks.py). Keys created
# before classes existed become mainnet: a key that may hold mainnet funds must
# never be judged by testnet rules (its Bitcoin and Tron signatures do not
# depend on the network label). New keys always name their class: no default.
_KEY_NETWORK_CLASS = r"""
ALTER TABLE keys ADD COLUMN network_class TEXT NOT NULL DEFAULT 'mainnet'
    CHECK (network_class IN ('mainnet', 'testnet'));
ALTER TABLE keys ALTER COLUMN network_class DROP DEFAULT;
"""

# Key ceremonies (signer.usecases.ceremonies): proposals officers approve, tagged like
# policy versions. Key states gain "retired" (a TEXT column: no change there).
_CEREMONIES = """
CREATE TABLE ceremonies (
    ceremony_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,  -- JSON text, kept byte for byte as written
    created_at_ms BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 1,
    mac BYTEA
);
CREATE INDEX ceremonies_created ON ceremonies (created_at_ms);
"""

# Webhook endpoints (signer.store.webhook_tables): the row's meaning (url, kinds)
# is HSM-tagged in `mac`; the cursor and the delivery claim change on every
# delivery and are not.
_WEBHOOKS = r"""
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    kinds TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    mac BYTEA,
    next_seq BIGINT NOT NULL CHECK (next_seq >= 0),
    owner TEXT NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);
"""

# Imported keys (signer.usecases.key_import): every key from before was generated in the token.
_KEY_ORIGIN = """
ALTER TABLE keys ADD COLUMN origin TEXT NOT NULL DEFAULT 'generated'
    CHECK (origin IN ('generated', 'imported'));
"""

# HD wallets (signer.store.wallet_tables): the seed only sealed, the row HSM-tagged.
_WALLETS = """
CREATE TABLE wallets (
    wallet_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    seal_key_id TEXT NOT NULL,
    sealed_seed BYTEA NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('generated', 'imported')),
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    mac BYTEA
);
"""

POSTGRES: tuple[Migration, ...] = (
    Migration(1, "initial schema", _INITIAL),
    Migration(2, "fenced claims", _CLAIM_TOKENS),
    Migration(3, "key network class", _KEY_NETWORK_CLASS),
    Migration(4, "state authenticators", _STATE_MACS),
    Migration(5, "key ceremonies", _CEREMONIES),
    Migration(6, "webhooks", _WEBHOOKS),
    Migration(7, "key origin", _KEY_ORIGIN),
    Migration(8, "hd wallets", _WALLETS),
)


def upgrade(conn: psycopg.Connection[TupleRow], schema: str, lock_id: int) -> list[int]:
    """Apply the versions `schema` lacks inside the caller's transaction; the versions applied.

    Replicas starting together queue on the advisory lock `lock_id`, so exactly
    one applies each version and the others find it done.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
    name = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = {int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations")}
    unknown = done - {m.version for m in POSTGRES}
    if unknown:
        # An older release must not write to a schema it does not understand.
        raise StoreError(
            f"schema {schema} has version {max(unknown)}, newer than this release"
            f" knows ({POSTGRES[-1].version}): upgrade Custos"
        )
    applied = []
    for migration in POSTGRES:
        if migration.version not in done:
            # Several statements, no parameters: sent as one simple query.
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration.version)
    return applied
