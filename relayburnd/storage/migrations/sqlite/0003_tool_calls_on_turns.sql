-- relayburnd schema 3 (SQLite): a turn's tool calls are stored on its row, as
-- in PostgreSQL (see postgres/0003): JSON text, an array of {"id", "name",
-- "args_sha256", "args_bytes"} objects in call order, NULL for a turn without
-- calls. The calls are aggregated in the order of the subquery (by seq).

ALTER TABLE turns ADD COLUMN tool_calls TEXT;

UPDATE turns SET tool_calls = (
    SELECT json_group_array(json_object('id', c.id, 'name', c.name,
                                        'args_sha256', c.args_sha256,
                                        'args_bytes', c.args_bytes))
    FROM (SELECT * FROM tool_calls WHERE turn_id = turns.id ORDER BY seq) c
)
WHERE id IN (SELECT turn_id FROM tool_calls);

DROP TABLE tool_calls;
