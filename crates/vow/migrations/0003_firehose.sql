-- The firehose: one row per event, holding the encoded frame (header and body, DAG-CBOR) as it
-- is sent. seq is assigned inside the writing transaction as MAX(seq)+1, so a rolled-back
-- write leaves no gap and committed order is seq order. The JSON rows of repo_events were a
-- placeholder written before frames existed; they are dropped.
DROP TABLE repo_events;
CREATE TABLE firehose (
    seq INTEGER PRIMARY KEY NOT NULL,
    did TEXT NOT NULL,
    kind TEXT NOT NULL,
    frame BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX firehose_by_time ON firehose(created_at);
