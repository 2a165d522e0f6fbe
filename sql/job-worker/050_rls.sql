-- job-worker slice: row-level security for the gateway's connection.
-- ca_api_gateway sees only the rows of the transaction's user (app.user_id, set
-- by the gateway's pool) — or every row inside a SECURITY DEFINER function that
-- sets app.rls_system = 'on' (admin analytics). The owner (ca_job_worker)
-- bypasses RLS (not forced); the other services keep reading what they read.

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_gateway ON jobs FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');
CREATE POLICY jobs_services ON jobs FOR SELECT TO ca_billing_webhook, ca_drive_poller
    USING (true);

ALTER TABLE jobs_archive ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_archive_gateway ON jobs_archive FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');

ALTER TABLE email_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY email_outbox_gateway ON email_outbox FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');
