-- relayburnd schema 3 (PostgreSQL): a turn's tool calls are stored on its row.
-- The child table cost every write of turns a second COPY and a second
-- primary-key index (bench/sink.py, docs/scaling.md): the calls now travel in
-- the turn's own COPY row and a merge replaces them with the turn.
--
-- The column holds JSON text: an array of {"id", "name", "args_sha256",
-- "args_bytes"} objects in call order (the last two left out when empty or
-- zero), NULL for a turn without calls; cast it to jsonb to query it. jsonb
-- would parse and rebuild every array on the way in, which cost the server
-- about a microsecond per turn with calls (measured), for no query that
-- relayburnd makes.

ALTER TABLE turns ADD COLUMN tool_calls text COLLATE "C";

UPDATE turns t SET tool_calls = c.calls
FROM (
    SELECT turn_id, json_agg(
               json_build_object('id', id, 'name', name, 'args_sha256', args_sha256,
                                 'args_bytes', args_bytes)
               ORDER BY seq)::text AS calls
    FROM tool_calls
    GROUP BY turn_id
) c
WHERE c.turn_id = t.id;

DROP TABLE tool_calls;
