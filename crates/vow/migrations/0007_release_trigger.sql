-- The embedded store deletes a block when the last reference to it goes, in the statement
-- that drops the reference (on IPFS the blocks table is empty and blocks are unpinned instead).
CREATE TRIGGER repo_blocks_release AFTER DELETE ON repo_blocks
WHEN NOT EXISTS (SELECT 1 FROM repo_blocks WHERE cid = OLD.cid)
BEGIN
    DELETE FROM blocks WHERE cid = OLD.cid;
END;
