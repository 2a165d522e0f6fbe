-- Issue 14 (least privilege): output sharing is a user setting.
--   'link'    the job-worker gives each output an "anyone with the link can view"
--             permission and the completion e-mail carries that link (the behaviour
--             before this migration, hence the default);
--   'private' no permission is created: the output is visible only to the user
--             (and whoever the user already shared the output folder with); the
--             e-mail names the file and its folder but carries no link.
-- Read by the job-worker (ca_job_worker has SELECT on users); changed through
-- PATCH /api/me.
ALTER TABLE users
    ADD COLUMN share_outputs TEXT NOT NULL DEFAULT 'link'
        CONSTRAINT users_share_outputs_check CHECK (share_outputs IN ('link', 'private'));
