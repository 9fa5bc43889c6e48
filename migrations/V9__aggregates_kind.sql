-- Datasets of the `aggregates` kind: files already counted per municipality
-- and period, perhaps many periods in one download (dataset::Kind).
--
-- A source without money (Farmácia Popular, Dignidade Menstrual) or
-- without a count has no value to write: the state and national tables
-- hold NULL there, never a number made up. These are carga's own tables
-- (the dashboard's API does not read them); carga's own reader of them,
-- `carga demo`'s summary, reads only Bolsa Família's payments.
-- `payments` is NULL where the source counts no payments, and
-- `municipalities` where its rows are not per municipality (`state_level`:
-- a power distributor's figures, written to its state, never split).
ALTER TABLE public.program_state_monthly
    ALTER COLUMN municipalities DROP NOT NULL,
    ALTER COLUMN total_beneficiaries DROP NOT NULL,
    ALTER COLUMN total_value_brl DROP NOT NULL,
    ALTER COLUMN payments DROP NOT NULL;
ALTER TABLE public.program_national_monthly
    ALTER COLUMN municipalities DROP NOT NULL,
    ALTER COLUMN total_beneficiaries DROP NOT NULL,
    ALTER COLUMN total_value_brl DROP NOT NULL,
    ALTER COLUMN payments DROP NOT NULL;

-- One download of such a file is one ledger row with no period (its bytes,
-- its rejects, its outcome); each period it published gets a row of its
-- own, `published` like a monthly load's, pointing at that download. Its
-- sha256 is the digest of the period's rows, so a period whose rows did not
-- change is recognised and left alone.
ALTER TABLE carga.loads ADD COLUMN file_load bigint REFERENCES carga.loads (id);
CREATE INDEX loads_file_load ON carga.loads (file_load) WHERE file_load IS NOT NULL;
