-- Issue 18 (review of the local createTask): one createTask call at a time per job. A local
-- activity's workflow task can time out while its worker, cut off from Temporal but not from Kie or
-- Postgres, is still inside the Kie call; another worker then runs the attempt again. Kie has no
-- idempotency key, so each createTask attempt claims the job's call until its own deadline first
-- (imagegen/jobs.py, claim_create); an attempt that finds the claim held hands over and comes back.
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS create_claimed_until timestamptz;
