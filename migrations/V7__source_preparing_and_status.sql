-- The Portal answers 202 while it prepares a file: a job waiting for it
-- knows since when (its own limit, http.preparing_limit_s, runs from here).
ALTER TABLE carga.jobs ADD COLUMN preparing_since timestamptz;

-- What the source answered to each attempt (200, 202, 304, 404…; NULL: no
-- answer): the latest period the source has, for "available at the
-- source, not loaded yet".
ALTER TABLE carga.job_attempts ADD COLUMN source_status smallint;
CREATE INDEX job_attempts_source_status ON carga.job_attempts (job_id)
    WHERE source_status IN (200, 202, 206, 304);
