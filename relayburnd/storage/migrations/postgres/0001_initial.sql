-- relayburnd schema 1 (PostgreSQL): one table per record kind.
-- Every record id is a 128-bit digest stored as uuid and is the primary key,
-- so hosts that ingest the same session converge to one row per record.
-- Text compares and sorts bytewise (COLLATE "C"), as Python compares the
-- records' strings; it is also the cheapest comparison for the indexes.

CREATE TABLE turns (
    id uuid PRIMARY KEY,
    rank text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    project text COLLATE "C" NOT NULL DEFAULT '',
    ts bigint NOT NULL,
    model text COLLATE "C",
    model_fallback boolean NOT NULL DEFAULT false,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    reasoning_tokens bigint NOT NULL DEFAULT 0,
    cache_write_5m_tokens bigint NOT NULL DEFAULT 0,
    cache_write_1h_tokens bigint NOT NULL DEFAULT 0,
    web_search_requests bigint NOT NULL DEFAULT 0,
    web_fetch_requests bigint NOT NULL DEFAULT 0,
    cost_usd double precision,
    price_version text COLLATE "C",
    logged_cost_usd double precision,
    stop_reason text COLLATE "C",
    service_tier text COLLATE "C",
    speed text COLLATE "C",
    is_sidechain boolean NOT NULL DEFAULT false,
    agent_id text COLLATE "C",
    message_id text COLLATE "C",
    request_id text COLLATE "C",
    snapshot_lines bigint NOT NULL DEFAULT 1,
    complete boolean NOT NULL DEFAULT false,
    authority bigint NOT NULL DEFAULT 0
);
-- Few indexes on purpose: each one costs every write (measured: each extra
-- btree on turns takes 10-25% off the write rate). Project, model and source
-- filters read the time or session index, or scan; reports scan anyway.
CREATE INDEX turns_ts ON turns (ts, id);
CREATE INDEX turns_session ON turns (session_id, ts);
-- The replay rule: message ids shared by a sidechain and a main-thread turn
-- come from merging these two indexes (measured 0.15 s for 1M turns, against
-- 0.5-0.9 s for a scan of the table).
CREATE INDEX turns_main_message ON turns (message_id) WHERE NOT is_sidechain;
CREATE INDEX turns_side_message ON turns (message_id) WHERE is_sidechain;
-- Reports group by whole days, hours, half or quarter hours and the model label
-- (sql_summary.py); with statistics on those expressions the planner
-- estimates the group count right and aggregates in parallel. Expression
-- statistics need PostgreSQL 14.
DO $$
DECLARE
    unit bigint;
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        FOREACH unit IN ARRAY ARRAY[86400000, 3600000, 1800000, 900000]::bigint[] LOOP
            EXECUTE format($sql$
                CREATE STATISTICS turns_groups_%s (ndistinct) ON
                    (ts - mod(mod(ts, %s) + %s, %s)),
                    (CASE WHEN model IS NULL OR model = '' THEN 'unknown'
                          WHEN speed = 'fast' THEN model || '-fast' ELSE model END)
                FROM turns
            $sql$, unit, unit, unit, unit);
        END LOOP;
    END IF;
END
$$;

-- Tool calls of a turn, in call order; replaced with the turn.
CREATE TABLE tool_calls (
    turn_id uuid NOT NULL,
    seq integer NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    args_sha256 text COLLATE "C" NOT NULL DEFAULT '',
    args_bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (turn_id, seq)
);

CREATE TABLE user_turns (
    id uuid PRIMARY KEY,
    rank text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    project text COLLATE "C" NOT NULL DEFAULT '',
    ts bigint NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    text_chars bigint NOT NULL DEFAULT 0,
    block_types text[] NOT NULL DEFAULT '{}',
    tool_result_count bigint NOT NULL DEFAULT 0,
    tool_result_bytes bigint NOT NULL DEFAULT 0,
    image_count bigint NOT NULL DEFAULT 0,
    is_command boolean NOT NULL DEFAULT false,
    is_sidechain boolean NOT NULL DEFAULT false,
    agent_id text COLLATE "C",
    prev_message_id text COLLATE "C",
    next_message_id text COLLATE "C"
);
CREATE INDEX user_turns_ts ON user_turns (ts, id);
CREATE INDEX user_turns_session ON user_turns (session_id, ts);

CREATE TABLE compactions (
    id uuid PRIMARY KEY,
    rank text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    project text COLLATE "C" NOT NULL DEFAULT '',
    ts bigint NOT NULL,
    message_id text COLLATE "C",
    "trigger" text COLLATE "C",
    pre_tokens bigint
);
CREATE INDEX compactions_ts ON compactions (ts, id);
CREATE INDEX compactions_session ON compactions (session_id, ts);

CREATE TABLE tool_results (
    id uuid PRIMARY KEY,
    rank text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    ts bigint NOT NULL,
    tool_use_id text COLLATE "C" NOT NULL,
    tool_name text COLLATE "C",
    is_error boolean NOT NULL DEFAULT false,
    exit_code bigint,
    output_bytes bigint NOT NULL DEFAULT 0,
    is_sidechain boolean NOT NULL DEFAULT false
);
CREATE INDEX tool_results_ts ON tool_results (ts, id);
CREATE INDEX tool_results_session ON tool_results (session_id, ts);

-- Conversation text. text_raw holds, byte-exact, text PostgreSQL cannot
-- (NUL characters, lone surrogates); then text is NULL.
CREATE TABLE content (
    id uuid PRIMARY KEY,
    rank text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    ts bigint NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL DEFAULT 0,
    role text COLLATE "C" NOT NULL,
    block_type text COLLATE "C" NOT NULL,
    text text COLLATE "C",
    text_raw bytea,
    sha256 text COLLATE "C" NOT NULL DEFAULT '',
    chars bigint NOT NULL DEFAULT 0,
    tool_use_id text COLLATE "C",
    tool_name text COLLATE "C",
    redactions bigint NOT NULL DEFAULT 0
);
CREATE INDEX content_session ON content (session_id, ts, seq);
CREATE INDEX content_ts ON content (ts, id);

CREATE TABLE relationships (
    id uuid PRIMARY KEY,
    rank text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    ts bigint NOT NULL DEFAULT 0,
    parent_session_id text COLLATE "C" NOT NULL,
    relation text COLLATE "C" NOT NULL,
    agent_id text COLLATE "C",
    tool_use_id text COLLATE "C"
);
CREATE INDEX relationships_ts ON relationships (ts, id);
CREATE INDEX relationships_session ON relationships (session_id);
CREATE INDEX relationships_parent ON relationships (parent_session_id);

-- Turns that count in reports: a sidechain turn whose message id belongs to a
-- main-thread turn is a replay of that response and is not billed again.
-- The replayed message ids are computed once (from the two message-id
-- indexes), then each sidechain turn is checked against that small set.
CREATE VIEW billable_turns AS
SELECT t.* FROM turns t
WHERE NOT t.is_sidechain
   OR t.message_id IS NULL
   OR t.message_id = ''
   OR t.message_id NOT IN (
        SELECT s.message_id FROM turns s
        WHERE s.is_sidechain AND s.message_id <> ''
          AND EXISTS (
            SELECT 1 FROM turns m WHERE NOT m.is_sidechain AND m.message_id = s.message_id
          )
   );

CREATE VIEW sessions AS
SELECT
    session_id,
    min(source) AS source,
    max(project) AS project,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    count(*) AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(input_tokens + output_tokens + cache_write_tokens + cache_read_tokens) AS total_tokens,
    coalesce(sum(cost_usd), 0) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_requests
FROM billable_turns
GROUP BY session_id;
