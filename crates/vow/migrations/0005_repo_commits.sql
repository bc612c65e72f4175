-- Every commit of every repo by revision, so getRepo can answer `since` with a diff.
CREATE TABLE repo_commits (
    did TEXT NOT NULL REFERENCES accounts(did) ON DELETE CASCADE,
    rev TEXT NOT NULL,
    cid TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (did, rev)
) WITHOUT ROWID;
