-- Pushed authorization requests and their codes now live in memory (they last minutes).
DROP TABLE oauth_requests;
