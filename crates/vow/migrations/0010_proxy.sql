-- Service-auth tokens the user's signer signed in advance, for the AppView's and chat
-- service's read methods, so reading keeps working while no signer is open.
CREATE TABLE service_tokens (
    did TEXT NOT NULL,
    aud TEXT NOT NULL,
    lxm TEXT NOT NULL,
    -- The did:key that signed it: a token of any other key is never used.
    signing_key TEXT NOT NULL,
    token TEXT NOT NULL,
    -- Unix seconds.
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (did, aud, lxm)
) WITHOUT ROWID;

-- Each account's app.bsky preferences: the JSON array putPreferences stored.
CREATE TABLE preferences (
    did TEXT PRIMARY KEY,
    prefs TEXT NOT NULL
);

-- The revision that last wrote each record (read-after-write compares it with the AppView's).
ALTER TABLE records ADD COLUMN rev TEXT;
