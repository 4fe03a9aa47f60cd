-- relayburnd schema 2 (PostgreSQL): fewer and cheaper indexes on turns.
-- Every index on turns is paid by every write (bench/sink.py, per turn of
-- server time): the main-thread message-id index held 90% of the rows, and
-- the (session_id, ts) index split its pages half-empty at one insertion
-- point per live session (twice the size of the time index). Listings keep
-- their plans; the replay rule of reports scans instead of probing (measured
-- both ways in docs/scaling.md, section 2).

-- The replay rule now hashes the message ids of sidechain turns (a tenth of
-- the rows, this partial index) and finds their main-thread copies in one
-- parallel scan of turns, instead of probing an index on nine tenths of them.
DROP INDEX IF EXISTS turns_main_message;
DROP INDEX IF EXISTS turns_side_message;
CREATE INDEX turns_side_message ON turns (message_id) WHERE is_sidechain AND message_id <> '';

-- A session's turns are found by session id alone (then sorted): equal keys
-- are stored once per page with a list of rows (btree deduplication), a
-- tenth of the size, and each insert lands where its session's rows end.
DROP INDEX IF EXISTS turns_session;
CREATE INDEX turns_session ON turns (session_id);

-- The same rule as before, spelled so that the planner hashes the small side.
CREATE OR REPLACE VIEW billable_turns AS
SELECT t.* FROM turns t
WHERE NOT t.is_sidechain
   OR t.message_id IS NULL
   OR t.message_id = ''
   OR t.message_id NOT IN (
        SELECT m.message_id FROM turns m
        WHERE NOT m.is_sidechain
          AND m.message_id IN (
            SELECT s.message_id FROM turns s WHERE s.is_sidechain AND s.message_id <> ''
          )
   );
