-- api-gateway slice (issue 15, "Notices"): which notice e-mails the user does
-- not want. users.email_notifications stays the master switch (off: no notice
-- e-mail and no job digest at all); email_opt_out turns off single kinds of
-- e-mail while the in-app notice (the job-worker's notices table) is always
-- recorded. The categories (docs/api-gateway.md, "Notices"):
--   usage          usage at 80 % and at 100 % of the plan's monthly limit
--   quota_waiting  photos waiting for quota
--   drive          Drive access revoked, the watched folder gone
--   payment        a payment failed
--   jobs           the job digest (photos ready or failed for good)
-- Read by the job-worker (notice_raise, the e-mail task); changed through
-- PATCH /api/me {"email_opt_out": [...]}, which replaces the whole set.

ALTER TABLE users
    ADD COLUMN email_opt_out text[] NOT NULL DEFAULT '{}'
        CONSTRAINT users_email_opt_out_check
        CHECK (email_opt_out <@ ARRAY['usage', 'quota_waiting', 'drive', 'payment', 'jobs']::text[]);
