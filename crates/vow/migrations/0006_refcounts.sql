-- Which blocks each repo's current tree references, and from which revision. A block is kept
-- (row in `blocks`, or pinned on IPFS) while any account references it; `rev` answers
-- getRepo's `since`. The writer keeps this in step with the root in the same transaction.
CREATE TABLE repo_blocks (
    did TEXT NOT NULL,
    cid TEXT NOT NULL,
    rev TEXT NOT NULL,
    PRIMARY KEY (did, cid)
) WITHOUT ROWID;
CREATE INDEX repo_blocks_by_cid ON repo_blocks(cid);
CREATE INDEX repo_blocks_by_rev ON repo_blocks(did, rev);

-- Records by CID, so removing a record whose CID another key still holds keeps the block.
CREATE INDEX records_by_cid ON records(did, cid);

-- Blobs referenced by each current record, anywhere in it. A blob row with no reference here
-- is removed once older than the grace period; a reference with no blob row is a missing blob
-- (listMissingBlobs).
CREATE TABLE record_blobs (
    did TEXT NOT NULL,
    collection TEXT NOT NULL,
    rkey TEXT NOT NULL,
    cid TEXT NOT NULL,
    PRIMARY KEY (did, collection, rkey, cid)
) WITHOUT ROWID;
CREATE INDEX record_blobs_by_cid ON record_blobs(did, cid);

-- On IPFS, a blob's bytes are a UnixFS file whose root CID differs from the ATProto CID.
ALTER TABLE blobs ADD COLUMN ipfs_cid TEXT;

-- repo_blocks.rev replaces the per-commit table for `since`.
DROP TABLE repo_commits;
