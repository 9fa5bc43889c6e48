-- A cancelled load (Ctrl-C, SIGTERM) gets its own status instead of
-- 'failed' with code 'cancelled'.
ALTER TABLE carga.loads DROP CONSTRAINT loads_status_check;
ALTER TABLE carga.loads ADD CONSTRAINT loads_status_check
    CHECK (status IN ('running', 'published', 'superseded', 'skipped', 'failed',
                      'abandoned', 'cancelled'));
-- The backend of the connection that owns a 'running' row (the one that
-- wrote it and finishes it). A row is abandoned only once that backend is
-- gone: a load that has started but not yet taken the month's lock is
-- alive, not dead.
ALTER TABLE carga.loads ADD COLUMN owner_pid integer;
