-- A job's source URL without its secrets: `url` holds it as screens and
-- logs show it (no userinfo, query values `***`); when it had secrets the
-- real URL is in `url_sealed`, encrypted under a key derived from
-- CARGA_NIS_KEY, and `url_fingerprint` is a keyed HMAC of it that tells two
-- URLs apart when they show alike (src/queue/sealed.rs).
ALTER TABLE carga.jobs ADD COLUMN url_sealed bytea;
ALTER TABLE carga.jobs ADD COLUMN url_fingerprint bytea;

-- Finished jobs stored their URL in clear until now: keep only what may be
-- shown, and mark the real URL as gone (an empty seal), so that a retry of
-- such a job fails with url_unsealable ("enqueue it again") instead of
-- fetching the stripped URL. Pending jobs keep theirs until they run: their
-- worker needs it.
UPDATE carga.jobs
SET url = regexp_replace(
        regexp_replace(url, '^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@]*@', '\1'),
        '\?.*$', ''),
    url_sealed = '\x'::bytea
WHERE url IS NOT NULL
  AND state IN ('succeeded', 'failed', 'cancelled')
  AND url ~ '(^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@]*@)|\?';
