-- A job's source URL without its secrets: `url` holds it as screens and
-- logs show it (no userinfo, query values `***`); when it had secrets the
-- real URL is in `url_sealed`, encrypted under a key derived from
-- CARGA_NIS_KEY (src/queue/sealed.rs).
ALTER TABLE carga.jobs ADD COLUMN url_sealed bytea;

-- Finished jobs stored their URL in clear until now: keep only what may be
-- shown. (Pending jobs keep theirs until they run: their worker needs it.)
UPDATE carga.jobs
SET url = regexp_replace(
        regexp_replace(url, '^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@]*@', '\1'),
        '\?.*$', '')
WHERE url IS NOT NULL
  AND state IN ('succeeded', 'failed', 'cancelled')
  AND url ~ '(^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@]*@)|\?';
