-- The job queue (see ARCHITECTURE.md, "Jobs"). One row per job; one row
-- per attempt in carga.job_attempts. Every time here is the database's.
CREATE TABLE carga.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset          text        NOT NULL,
    period           date        NOT NULL,
    -- A source overriding the spec's URL template (operator or webhook).
    url              text,
    force            boolean     NOT NULL DEFAULT false,
    state            text        NOT NULL DEFAULT 'available'
        CHECK (state IN ('available', 'running', 'retryable', 'succeeded', 'failed', 'cancelled')),
    -- Lower runs first: 0 fresh months (schedule, webhook, operator), 2 backfills.
    priority         smallint    NOT NULL DEFAULT 0,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    enqueued_by      text        NOT NULL CHECK (enqueued_by IN ('schedule', 'operator', 'webhook')),
    -- The webhook sender, the operator's name, or the schedule's dataset.
    sender           text,
    -- The floored cron time a scheduled job belongs to.
    slot             timestamptz,
    enqueued_at      timestamptz NOT NULL DEFAULT now(),
    scheduled_at     timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    attempted_at     timestamptz,
    finished_at      timestamptz,
    -- Until when a month the Portal has not published (404) is retried.
    not_found_deadline timestamptz,
    -- The lease of the running attempt.
    worker           text,
    lease_token      text,
    lease_expires_at timestamptz,
    -- The load connection's backend, ended by the rescuer when the lease
    -- expires (a frozen worker still holds its transaction and lock).
    load_backend_pid integer,
    cancel_requested boolean     NOT NULL DEFAULT false,
    progress         jsonb       NOT NULL DEFAULT '{}',
    load_id          bigint,
    -- 'published' or 'unchanged' once succeeded.
    outcome          text,
    error_code       text,
    error            text
);

-- One pending job per (dataset, period): every trigger converges on it.
CREATE UNIQUE INDEX jobs_one_pending ON carga.jobs (dataset, period)
    WHERE state IN ('available', 'running', 'retryable');
-- One job per schedule slot, whatever happened to it since.
CREATE UNIQUE INDEX jobs_one_per_slot ON carga.jobs (dataset, slot) WHERE slot IS NOT NULL;
-- The claim's order.
CREATE INDEX jobs_claim ON carga.jobs (priority, scheduled_at, id)
    WHERE state IN ('available', 'retryable');
CREATE INDEX jobs_running_lease ON carga.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON carga.jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE carga.job_attempts (
    job_id      bigint      NOT NULL REFERENCES carga.jobs (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    worker      text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- succeeded, retryable, failed, cancelled, rescued
    outcome     text,
    error_code  text,
    error       text,
    load_id     bigint,
    PRIMARY KEY (job_id, attempt)
);

-- Every accepted webhook delivery and the job it resolved to, so a replayed
-- `webhook-id` returns the same job (kept longer than the signature's
-- timestamp tolerance; pruned with the job history).
CREATE TABLE carga.webhook_deliveries (
    sender      text        NOT NULL,
    webhook_id  text        NOT NULL,
    job_id      bigint      NOT NULL REFERENCES carga.jobs (id) ON DELETE CASCADE,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender, webhook_id)
);

-- Workers LISTEN on carga_jobs: a job that becomes claimable wakes them
-- (delivered at commit). They also poll, in case a notification is missed.
CREATE FUNCTION carga.jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('carga_jobs', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state, scheduled_at ON carga.jobs
    FOR EACH ROW WHEN (NEW.state IN ('available', 'retryable'))
    EXECUTE FUNCTION carga.jobs_notify();
