-- Facts about this server that must survive restarts, e.g. the hostname passkeys were
-- registered under (their WebAuthn RP ID).
CREATE TABLE server_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
