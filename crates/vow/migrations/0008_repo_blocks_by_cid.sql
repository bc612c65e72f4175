-- repo_blocks keyed by (cid, did): the primary key then answers both "does this repo hold the
-- block" and "does any repo hold it", one B-tree fewer to update for every block written.
CREATE TABLE repo_blocks_new (
    cid TEXT NOT NULL,
    did TEXT NOT NULL,
    rev TEXT NOT NULL,
    PRIMARY KEY (cid, did)
) WITHOUT ROWID;
INSERT INTO repo_blocks_new (cid, did, rev) SELECT cid, did, rev FROM repo_blocks;
DROP TRIGGER repo_blocks_release;
DROP TABLE repo_blocks;
ALTER TABLE repo_blocks_new RENAME TO repo_blocks;
CREATE INDEX repo_blocks_by_rev ON repo_blocks(did, rev);
CREATE TRIGGER repo_blocks_release AFTER DELETE ON repo_blocks
WHEN NOT EXISTS (SELECT 1 FROM repo_blocks WHERE cid = OLD.cid)
BEGIN
    DELETE FROM blocks WHERE cid = OLD.cid;
END;
