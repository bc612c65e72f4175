-- Uploaded blobs: metadata here, bytes in the blob store (files on the embedded store), keyed
-- by the ATProto blob CID (CIDv1, raw codec, sha2-256 of the whole file).
CREATE TABLE blobs (
    did TEXT NOT NULL REFERENCES accounts(did) ON DELETE CASCADE,
    cid TEXT NOT NULL,
    mime TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (did, cid)
) WITHOUT ROWID;
