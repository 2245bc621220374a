-- Tenants, their limits and their API keys (issue 3).
-- A NULL limit means "the node's configured default"; 0 means "no limit".
CREATE TABLE tenants (
    id             text        PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    max_running    integer     CHECK (max_running >= 0),
    submit_rate    real        CHECK (submit_rate >= 0),
    submit_burst   integer     CHECK (submit_burst >= 1),
    max_queued     integer     CHECK (max_queued >= 0),
    max_websockets integer     CHECK (max_websockets >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 digest of each key is kept: a key is shown once, when it is created.
CREATE TABLE api_keys (
    id         text        PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants (id),
    name       text        NOT NULL DEFAULT '',
    digest     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);
