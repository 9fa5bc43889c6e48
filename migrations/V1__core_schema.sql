-- carga core schema.
--
-- The four API-facing tables (states, municipalities, programs,
-- beneficiary_data) are *adopted* when they already exist: the dashboard API
-- creates them with its own Alembic migrations (integer ids, PostGIS geometry
-- columns, JSON extra_data). Every statement below is therefore additive and
-- idempotent: CREATE ... IF NOT EXISTS with the same names Alembic uses, and
-- ADD COLUMN IF NOT EXISTS for what carga needs on top (the SIAFI code).
-- Nothing here drops or rewrites a column of the API's.
--
-- carga's own bookkeeping lives in the `carga` schema (created by the runner
-- before this file runs), apart from Alembic's `alembic_version`.

CREATE TABLE IF NOT EXISTS public.states (
    id           serial PRIMARY KEY,
    ibge_code    varchar(2)   NOT NULL,
    name         varchar(100) NOT NULL,
    abbreviation varchar(2)   NOT NULL,
    region       varchar(20)  NOT NULL,
    created_at   timestamp,
    updated_at   timestamp
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_states_ibge_code ON public.states (ibge_code);
CREATE INDEX IF NOT EXISTS ix_states_abbreviation ON public.states (abbreviation);

CREATE TABLE IF NOT EXISTS public.municipalities (
    id         serial PRIMARY KEY,
    ibge_code  varchar(7)   NOT NULL,
    name       varchar(200) NOT NULL,
    state_id   integer      NOT NULL REFERENCES public.states (id),
    population integer,
    area_km2   numeric(12, 2),
    created_at timestamp,
    updated_at timestamp
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_municipalities_ibge_code ON public.municipalities (ibge_code);
CREATE INDEX IF NOT EXISTS ix_municipalities_state_id ON public.municipalities (state_id);
-- The Portal files identify municipalities by SIAFI code, which is not
-- derivable from the IBGE code: carga adds it to the API's table.
ALTER TABLE public.municipalities ADD COLUMN IF NOT EXISTS siafi_code varchar(4);
CREATE UNIQUE INDEX IF NOT EXISTS ix_municipalities_siafi_code
    ON public.municipalities (siafi_code) WHERE siafi_code IS NOT NULL;

CREATE TABLE IF NOT EXISTS public.programs (
    id               serial PRIMARY KEY,
    code             varchar(50)  NOT NULL,
    name             varchar(200) NOT NULL,
    description      varchar(1000),
    data_source_url  varchar(500),
    update_frequency varchar(50),
    is_active        boolean DEFAULT true,
    created_at       timestamp,
    updated_at       timestamp
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_programs_code ON public.programs (code);

CREATE TABLE IF NOT EXISTS public.beneficiary_data (
    id                  serial PRIMARY KEY,
    municipality_id     integer NOT NULL REFERENCES public.municipalities (id),
    program_id          integer NOT NULL REFERENCES public.programs (id),
    reference_date      date    NOT NULL,
    total_beneficiaries integer,
    total_families      integer,
    total_value_brl     numeric(15, 2),
    coverage_rate       numeric(5, 4),
    extra_data          jsonb,
    data_source         varchar(100),
    ingested_at         timestamp,
    CONSTRAINT beneficiary_data_municipality_id_program_id_reference_date_key
        UNIQUE (municipality_id, program_id, reference_date)
);
CREATE INDEX IF NOT EXISTS ix_beneficiary_data_program_id ON public.beneficiary_data (program_id);
CREATE INDEX IF NOT EXISTS ix_beneficiary_data_reference_date ON public.beneficiary_data (reference_date);

-- Pre-computed aggregates, so the API stops summing on the fly. Distinct
-- counts are exact at each level (a person paid in two municipalities of one
-- state counts once for the state), so these are NOT sums of beneficiary_data.
CREATE TABLE IF NOT EXISTS public.program_state_monthly (
    program_id          integer NOT NULL REFERENCES public.programs (id),
    state_id            integer NOT NULL REFERENCES public.states (id),
    reference_date      date    NOT NULL,
    municipalities      integer NOT NULL,
    total_beneficiaries integer NOT NULL,
    total_families      integer,
    total_value_brl     numeric(15, 2) NOT NULL,
    payments            bigint  NOT NULL,
    load_id             bigint  NOT NULL,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, reference_date, state_id)
);

CREATE TABLE IF NOT EXISTS public.program_national_monthly (
    program_id          integer NOT NULL REFERENCES public.programs (id),
    reference_date      date    NOT NULL,
    states              integer NOT NULL,
    municipalities      integer NOT NULL,
    total_beneficiaries integer NOT NULL,
    total_families      integer,
    total_value_brl     numeric(17, 2) NOT NULL,
    payments            bigint  NOT NULL,
    load_id             bigint  NOT NULL,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, reference_date)
);

-- The loads ledger: one row per attempt, written outside the load
-- transaction when the attempt starts and finishes, and inside it on publish.
CREATE TABLE carga.loads (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset                text    NOT NULL,
    program_code           text,
    period                 date,
    status                 text    NOT NULL
        CHECK (status IN ('running', 'published', 'superseded', 'skipped', 'failed', 'abandoned')),
    forced                 boolean NOT NULL DEFAULT false,
    source_url             text    NOT NULL,
    etag                   text,
    last_modified          text,
    sha256                 bytea,
    bytes_downloaded       bigint,
    bytes_decompressed     bigint,
    rows_read              bigint,
    rows_loaded            bigint,
    rows_rejected          bigint,
    distinct_beneficiaries bigint,
    total_value_brl        numeric(17, 2),
    partition_name         text,
    stage_seconds          jsonb   NOT NULL DEFAULT '{}',
    error_code             text,
    error                  text,
    started_at             timestamptz NOT NULL DEFAULT now(),
    finished_at            timestamptz
);
CREATE INDEX loads_dataset_period ON carga.loads (dataset, period, started_at DESC);
-- At most one published (current) load per program and period.
CREATE UNIQUE INDEX loads_one_published ON carga.loads (program_code, period)
    WHERE status = 'published';

-- Rows refused by a load. raw_line is redacted by the dataset's privacy
-- policy before it is stored (dropped and hashed columns never appear).
CREATE TABLE carga.rejects (
    load_id     bigint NOT NULL REFERENCES carga.loads (id) ON DELETE CASCADE,
    line        bigint NOT NULL,
    byte_offset bigint NOT NULL,
    column_name text,
    reason      text   NOT NULL,
    raw_line    text,
    PRIMARY KEY (load_id, line)
);

-- The payment rows, one leaf partition per (program, period):
--   carga.payments            LIST (program_id)
--     carga.payments_<code>   LIST (reference_date)
--       carga.payments_<code>_<yyyymm>_l<load id>
-- A load fills a new leaf created in its own transaction (so COPY FREEZE
-- applies and no reader can see it) and swaps it in when it publishes.
CREATE TABLE carga.payments (
    program_id       integer NOT NULL,
    reference_date   date    NOT NULL,
    competence_date  date,
    municipality_id  integer NOT NULL,
    -- first 128 bits of HMAC-SHA256(CARGA_NIS_KEY, NIS); NULL when the row
    -- carries no valid NIS. uuid is PostgreSQL's fixed 16-byte type, which
    -- sorts and compares fastest for count(DISTINCT).
    beneficiary_hash uuid,
    value_cents      bigint  NOT NULL,
    -- true when this row's beneficiary may have appeared earlier in the
    -- file (a Bloom filter in the loader; never false for a real repeat).
    -- Distinct counts are computed exactly from the flagged hashes only.
    maybe_repeat     boolean NOT NULL DEFAULT false,
    -- columns the dataset's privacy policy keeps (or hashes); NULL by default
    attributes       jsonb
) PARTITION BY LIST (program_id);
