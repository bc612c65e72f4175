-- A moderation takedown, set by the operator: the repo is no longer served (RepoTakendown).
ALTER TABLE accounts ADD COLUMN takedown_ref TEXT;
