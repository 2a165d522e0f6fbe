-- billing-webhook slice: row-level security for the gateway's connection.
-- ca_api_gateway sees only the rows of the transaction's user (app.user_id, set
-- by the gateway's pool) — or every row inside a SECURITY DEFINER function that
-- sets app.rls_system = 'on' (admin analytics). The owner (ca_billing_webhook)
-- bypasses RLS (not forced); the worker keeps reading subscriptions.

ALTER TABLE subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY subscriptions_gateway ON subscriptions FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');
CREATE POLICY subscriptions_services ON subscriptions FOR SELECT
    TO ca_job_worker, ca_drive_poller USING (true);

ALTER TABLE usage_tracking ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_tracking_gateway ON usage_tracking FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');
CREATE POLICY usage_tracking_services ON usage_tracking FOR SELECT
    TO ca_job_worker, ca_drive_poller USING (true);

ALTER TABLE usage_reservations ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_reservations_gateway ON usage_reservations FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');

ALTER TABLE meter_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY meter_outbox_gateway ON meter_outbox FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');
