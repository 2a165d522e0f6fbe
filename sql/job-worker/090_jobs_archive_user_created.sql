-- job-worker slice (issue 15, "history that does not vanish"): GET /api/jobs
-- lists a user's archived jobs with the live ones, newest first, in one
-- statement: a Merge Append of two ordered index scans, jobs on
-- idx_jobs_user_created and jobs_archive on this index (same key), stopped at
-- the page's limit. Without it the archive side sorted every archived job of
-- the user for each page.
CREATE INDEX idx_jobs_archive_user_created ON jobs_archive(user_id, created_at DESC, id DESC);
