-- relayburnd schema 1 (SQLite): the same logical schema as PostgreSQL.
-- Ordinary rowid tables with the record id (32 hex characters) as the
-- primary key; booleans are 0/1, lists are JSON text.

CREATE TABLE turns (
    id TEXT NOT NULL PRIMARY KEY,
    rank TEXT NOT NULL,
    source TEXT NOT NULL,
    session_id TEXT NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    ts INTEGER NOT NULL,
    model TEXT,
    model_fallback INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
    web_search_requests INTEGER NOT NULL DEFAULT 0,
    web_fetch_requests INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    price_version TEXT,
    logged_cost_usd REAL,
    stop_reason TEXT,
    service_tier TEXT,
    speed TEXT,
    is_sidechain INTEGER NOT NULL DEFAULT 0,
    agent_id TEXT,
    message_id TEXT,
    request_id TEXT,
    snapshot_lines INTEGER NOT NULL DEFAULT 1,
    complete INTEGER NOT NULL DEFAULT 0,
    authority INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX turns_ts ON turns (ts, id);
CREATE INDEX turns_session ON turns (session_id, ts);
CREATE INDEX turns_project ON turns (project, ts);
CREATE INDEX turns_model ON turns (model, ts);
CREATE INDEX turns_source ON turns (source, ts);
-- The replay rule looks up main-thread turns by message id.
CREATE INDEX turns_main_message ON turns (message_id) WHERE NOT is_sidechain;

-- Tool calls of a turn, in call order; replaced with the turn.
CREATE TABLE tool_calls (
    turn_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    args_sha256 TEXT NOT NULL DEFAULT '',
    args_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (turn_id, seq)
);

CREATE TABLE user_turns (
    id TEXT NOT NULL PRIMARY KEY,
    rank TEXT NOT NULL,
    source TEXT NOT NULL,
    session_id TEXT NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    ts INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    text_chars INTEGER NOT NULL DEFAULT 0,
    block_types TEXT NOT NULL DEFAULT '[]',
    tool_result_count INTEGER NOT NULL DEFAULT 0,
    tool_result_bytes INTEGER NOT NULL DEFAULT 0,
    image_count INTEGER NOT NULL DEFAULT 0,
    is_command INTEGER NOT NULL DEFAULT 0,
    is_sidechain INTEGER NOT NULL DEFAULT 0,
    agent_id TEXT,
    prev_message_id TEXT,
    next_message_id TEXT
);
CREATE INDEX user_turns_ts ON user_turns (ts, id);
CREATE INDEX user_turns_session ON user_turns (session_id, ts);

CREATE TABLE compactions (
    id TEXT NOT NULL PRIMARY KEY,
    rank TEXT NOT NULL,
    source TEXT NOT NULL,
    session_id TEXT NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    ts INTEGER NOT NULL,
    message_id TEXT,
    "trigger" TEXT,
    pre_tokens INTEGER
);
CREATE INDEX compactions_ts ON compactions (ts, id);
CREATE INDEX compactions_session ON compactions (session_id, ts);

CREATE TABLE tool_results (
    id TEXT NOT NULL PRIMARY KEY,
    rank TEXT NOT NULL,
    source TEXT NOT NULL,
    session_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    tool_use_id TEXT NOT NULL,
    tool_name TEXT,
    is_error INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    is_sidechain INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tool_results_ts ON tool_results (ts, id);
CREATE INDEX tool_results_session ON tool_results (session_id, ts);

-- Conversation text. text_raw holds, byte-exact, text that is not valid
-- UTF-8 on its own (lone surrogates) or holds NUL characters; then text is NULL.
CREATE TABLE content (
    id TEXT NOT NULL PRIMARY KEY,
    rank TEXT NOT NULL,
    source TEXT NOT NULL,
    session_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    role TEXT NOT NULL,
    block_type TEXT NOT NULL,
    text TEXT,
    text_raw BLOB,
    sha256 TEXT NOT NULL DEFAULT '',
    chars INTEGER NOT NULL DEFAULT 0,
    tool_use_id TEXT,
    tool_name TEXT,
    redactions INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX content_session ON content (session_id, ts, seq);
CREATE INDEX content_ts ON content (ts, id);

CREATE TABLE relationships (
    id TEXT NOT NULL PRIMARY KEY,
    rank TEXT NOT NULL,
    source TEXT NOT NULL,
    session_id TEXT NOT NULL,
    ts INTEGER NOT NULL DEFAULT 0,
    parent_session_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    agent_id TEXT,
    tool_use_id TEXT
);
CREATE INDEX relationships_ts ON relationships (ts, id);
CREATE INDEX relationships_session ON relationships (session_id);
CREATE INDEX relationships_parent ON relationships (parent_session_id);

-- Turns that count in reports: a sidechain turn whose message id belongs to a
-- main-thread turn is a replay of that response and is not billed again.
CREATE VIEW billable_turns AS
SELECT t.* FROM turns t WHERE NOT t.is_sidechain
UNION ALL
SELECT t.* FROM turns t
WHERE t.is_sidechain
  AND NOT EXISTS (
    SELECT 1 FROM turns m
    WHERE NOT m.is_sidechain AND m.message_id = t.message_id AND m.message_id <> ''
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
    total(cost_usd) AS cost_usd,
    sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_requests
FROM billable_turns
GROUP BY session_id;
