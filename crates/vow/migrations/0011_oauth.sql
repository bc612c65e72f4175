-- OAuth: a session an app opened through the OAuth flow lives in `sessions` like the others
-- (listed, ended and revoked the same way), with its client, its scope and its DPoP key.
ALTER TABLE sessions ADD COLUMN oauth_client TEXT;
ALTER TABLE sessions ADD COLUMN oauth_scope TEXT;
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;

-- Pushed authorization requests, until their code is exchanged or they expire. `did` and
-- `code` (hashed) are set when the user approves.
CREATE TABLE oauth_requests (
    id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    parameters TEXT NOT NULL,
    dpop_jkt TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    did TEXT,
    code TEXT UNIQUE
);

-- What each user allowed each app, so the consent screen is shown once per client and scope.
CREATE TABLE oauth_consents (
    did TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    PRIMARY KEY (did, client_id)
);
