-- The operator console's sessions (see ARCHITECTURE.md, "Console
-- sessions"), written only by src/sessions.rs. A session is valid while its
-- row exists, has not expired and was made with the operator token the
-- server now has: signing out deletes the row, rotating the token ends
-- every session made with the old one, on every `serve` process at once.
CREATE TABLE carga.console_sessions (
    -- SHA-256 of the cookie's random value: a copy of this table signs
    -- nobody in.
    id_hash           bytea       PRIMARY KEY,
    -- HMAC-SHA256, keyed with the operator token, of the cookie's value
    -- (never stored), so this table cannot test guesses of the token.
    token_fingerprint bytea       NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON carga.console_sessions (expires_at);
