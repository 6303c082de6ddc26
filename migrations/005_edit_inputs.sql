-- Issue 16: an edit's input pictures.
-- input_files: what the user gave, in order: [{"file_id", "file_unique_id", "url", "size", "mime"}, …]
--   (a Telegram file id, or the URL of an earlier result); '[]' for a text-to-image job.
-- uploads: what was uploaded to Kie's file API for this job, by the picture's index:
--   {"0": {"url", "file_name", "size", "sha256", "mime", "uploaded_at" (Unix s), "reused"}, …};
--   written as each upload completes, so a retried upload activity reuses them instead of uploading again.
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS input_files jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS uploads jsonb NOT NULL DEFAULT '{}'::jsonb;
