-- Accounts hosted here. The user's signing key is NULL until a passkey is registered.
CREATE TABLE accounts (
    did TEXT PRIMARY KEY NOT NULL,
    handle TEXT NOT NULL UNIQUE,
    email TEXT UNIQUE,
    email_confirmed_at TEXT,
    password_hash TEXT NOT NULL,
    signing_key TEXT,
    repo_root TEXT,
    repo_rev TEXT,
    deactivated_at TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE invite_codes (
    code TEXT PRIMARY KEY NOT NULL,
    for_account TEXT NOT NULL,
    created_by TEXT NOT NULL,
    available INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE invite_code_uses (
    code TEXT NOT NULL REFERENCES invite_codes(code),
    used_by TEXT NOT NULL,
    used_at TEXT NOT NULL,
    PRIMARY KEY (code, used_by)
);

-- One row per login. Access tokens name their session, so deleting the row revokes both
-- tokens. refresh_jti is the only refresh token of the session still accepted.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    did TEXT NOT NULL REFERENCES accounts(did) ON DELETE CASCADE,
    app_password_name TEXT,
    refresh_jti TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_did ON sessions(did);

CREATE TABLE app_passwords (
    did TEXT NOT NULL REFERENCES accounts(did) ON DELETE CASCADE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    privileged INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (did, name)
);

-- The embedded blockstore: repo blocks by CID.
CREATE TABLE blocks (
    cid TEXT PRIMARY KEY NOT NULL,
    bytes BLOB NOT NULL
) WITHOUT ROWID;

-- Index of the current records of every repo (values live in the blockstore).
CREATE TABLE records (
    did TEXT NOT NULL,
    collection TEXT NOT NULL,
    rkey TEXT NOT NULL,
    cid TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    PRIMARY KEY (did, collection, rkey)
) WITHOUT ROWID;

-- Events for the firehose, in sequence order.
CREATE TABLE repo_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    did TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL
);
