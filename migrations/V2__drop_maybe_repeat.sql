-- Distinct beneficiaries are now counted exactly by the loader (a
-- hash-partitioned spill, see src/aggregate/distinct.rs), so the rows no
-- longer carry the Bloom filter's "may be a repeat" flag. Dropping a column
-- of a partitioned table drops it from every partition; it only changes the
-- catalog (no rewrite).
ALTER TABLE carga.payments DROP COLUMN IF EXISTS maybe_repeat;
